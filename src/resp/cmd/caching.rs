//! CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO: a connection turns
//! client-side caching on or off and says which reads it caches; the
//! registry and the invalidations are [`crate::resp::tracking`]'s.

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::super::tracking::{Caching, Mode};
use super::util::{integer_arg, is, syntax_error};
use super::{CommandResult, Session};

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p …] [BCAST] [OPTIN]
/// [OPTOUT] [NOLOOP], with Redis's checks and errors.
pub fn tracking(session: &mut Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let on = match &args[0] {
        word if is(word, "on") => true,
        word if is(word, "off") => false,
        _ => return Err(syntax_error()),
    };
    let mut redirect = None;
    let mut prefixes = Vec::new();
    let (mut broadcast, mut opt_in, mut opt_out, mut no_loop) = (false, false, false, false);
    let mut index = 1;
    while index < args.len() {
        let option = &args[index];
        let value = args.get(index + 1);
        match value {
            Some(id) if is(option, "redirect") => {
                if redirect.is_some() {
                    return Err(Reply::err(
                        "A client can only redirect to a single other client",
                    ));
                }
                let id = integer_arg(id)?;
                if id != session.id as i64
                    && (id <= 0 || shared.clients.list(Some(&[id as u64])).is_empty())
                {
                    return Err(Reply::err(
                        "The client ID you want redirect to does not exist",
                    ));
                }
                redirect = Some(id as u64);
                index += 2;
                continue;
            }
            Some(prefix) if is(option, "prefix") => {
                prefixes.push(prefix.clone());
                index += 2;
                continue;
            }
            _ => {}
        }
        match () {
            () if is(option, "bcast") => broadcast = true,
            () if is(option, "optin") => opt_in = true,
            () if is(option, "optout") => opt_out = true,
            () if is(option, "noloop") => no_loop = true,
            () => return Err(syntax_error()),
        }
        index += 1;
    }
    if !on {
        session.stop_tracking(shared);
        return Ok(Reply::ok());
    }
    if !broadcast && !prefixes.is_empty() {
        return Err(Reply::err(
            "PREFIX option requires BCAST mode to be enabled",
        ));
    }
    if opt_in && opt_out {
        return Err(Reply::err("You can't use both OPTIN and OPTOUT"));
    }
    if broadcast && (opt_in || opt_out) {
        return Err(Reply::err("OPTIN and OPTOUT are not compatible with BCAST"));
    }
    if let Some(current) = &session.tracking {
        if current.broadcast.is_some() != broadcast {
            return Err(Reply::err(
                "You can't switch BCAST mode on/off before disabling tracking for this \
                 client, and then re-enabling it with a different mode.",
            ));
        }
        // As in Redis, only a switch between OPTIN and OPTOUT is refused;
        // to or from the default is allowed.
        let switched = matches!(
            (current.caching, caching_of(opt_in, opt_out)),
            (Caching::OptIn, Caching::OptOut) | (Caching::OptOut, Caching::OptIn)
        );
        if switched {
            return Err(Reply::err(
                "You can't switch OPTIN/OPTOUT mode before disabling tracking for this \
                 client, and then re-enabling it with a different mode.",
            ));
        }
    }
    let broadcast = match broadcast {
        false => None,
        true => Some(broadcast_prefixes(session.tracking.as_ref(), prefixes)?),
    };
    let mode = Mode {
        broadcast,
        caching: caching_of(opt_in, opt_out),
        redirect: redirect.filter(|&id| id != session.id),
        no_loop,
    };
    session.tracking = Some(mode.clone());
    if shared.tracking.start(session.outbox(shared), mode) {
        shared.update_tracking_hook();
    }
    Ok(Reply::ok())
}

/// A broadcaster's prefixes after `CLIENT TRACKING ON BCAST [PREFIX p …]`:
/// as in Redis, the ones given join those it has (none given: the empty
/// prefix, every key), and no prefix may start another, among those given
/// or against those it has.
fn broadcast_prefixes(current: Option<&Mode>, given: Vec<Bytes>) -> Result<Vec<Bytes>, Reply> {
    let overlap = |a: &[u8], b: &[u8]| a.starts_with(b) || b.starts_with(a);
    let existing: &[Bytes] = current
        .and_then(|mode| mode.broadcast.as_deref())
        .unwrap_or_default();
    for (index, prefix) in given.iter().enumerate() {
        if let Some(collision) = existing.iter().find(|old| overlap(old, prefix)) {
            return Err(Reply::err(format!(
                "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single \
                 client must not overlap.",
                String::from_utf8_lossy(prefix),
                String::from_utf8_lossy(collision)
            )));
        }
        if let Some(collision) = given[index + 1..]
            .iter()
            .find(|other| overlap(other, prefix))
        {
            return Err(Reply::err(format!(
                "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a \
                 single client must not overlap.",
                String::from_utf8_lossy(prefix),
                String::from_utf8_lossy(collision)
            )));
        }
    }
    let mut prefixes = existing.to_vec();
    match given.is_empty() {
        true if !prefixes.iter().any(Bytes::is_empty) => prefixes.push(Bytes::new()),
        true => {}
        false => prefixes.extend(given),
    }
    Ok(prefixes)
}

fn caching_of(opt_in: bool, opt_out: bool) -> Caching {
    match (opt_in, opt_out) {
        (true, _) => Caching::OptIn,
        (_, true) => Caching::OptOut,
        _ => Caching::Always,
    }
}

/// CLIENT CACHING YES|NO: whether the next command's reads are cached, in
/// OPTIN (YES) or OPTOUT (NO) mode.
pub fn caching(session: &mut Session, answer: &Bytes) -> CommandResult {
    let Some(mode @ (Caching::OptIn | Caching::OptOut)) =
        session.tracking.as_ref().map(|mode| mode.caching)
    else {
        return Err(Reply::err(
            "CLIENT CACHING can be called only when the client is in tracking mode with \
             OPTIN or OPTOUT mode enabled",
        ));
    };
    let (needed, cache, word, mode_name) = match answer {
        answer if is(answer, "yes") => (Caching::OptIn, true, "YES", "OPTIN"),
        answer if is(answer, "no") => (Caching::OptOut, false, "NO", "OPTOUT"),
        _ => return Err(syntax_error()),
    };
    if mode != needed {
        return Err(Reply::err(format!(
            "CLIENT CACHING {word} is only valid when tracking is enabled in {mode_name} mode."
        )));
    }
    session.tracking_caching = Some(cache);
    Ok(Reply::ok())
}

/// CLIENT GETREDIR: -1 with tracking off, 0 when it is on without a
/// redirect, else the connection its invalidations go to.
pub fn redirect(session: &Session) -> Reply {
    Reply::Integer(match &session.tracking {
        None => -1,
        Some(mode) => mode.redirect.map_or(0, |id| id as i64),
    })
}

/// CLIENT TRACKINGINFO, in Redis 7's layout.
pub fn info(session: &Session, shared: &Shared) -> Reply {
    let bulk = |text: &'static str| Reply::Bulk(Bytes::from_static(text.as_bytes()));
    let mut flags = Vec::new();
    let mut prefixes = Vec::new();
    match &session.tracking {
        None => flags.push(bulk("off")),
        Some(mode) => {
            flags.push(bulk("on"));
            if let Some(list) = &mode.broadcast {
                flags.push(bulk("bcast"));
                prefixes = list.iter().cloned().map(Reply::Bulk).collect();
            }
            match (mode.caching, session.tracking_caching) {
                (Caching::OptIn, given) => {
                    flags.push(bulk("optin"));
                    if given == Some(true) {
                        flags.push(bulk("caching-yes"));
                    }
                }
                (Caching::OptOut, given) => {
                    flags.push(bulk("optout"));
                    if given == Some(false) {
                        flags.push(bulk("caching-no"));
                    }
                }
                (Caching::Always, _) => {}
            }
            if mode.no_loop {
                flags.push(bulk("noloop"));
            }
            if shared.tracking.is_redirect_broken(session.id) {
                flags.push(bulk("broken_redirect"));
            }
        }
    }
    Reply::Map(vec![
        (bulk("flags"), Reply::Array(flags)),
        (bulk("redirect"), redirect(session)),
        (bulk("prefixes"), Reply::Array(prefixes)),
    ])
}
