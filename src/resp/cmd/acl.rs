//! ACL: what Redis 7's access-control commands say about walrus's one user.
//!
//! Walrus has a single user, `default`, who may run every command on every
//! key and channel; its password is the server's token (`--auth-token-file`)
//! or, without one, none (Redis's `nopass`). The reading subcommands (WHOAMI,
//! USERS, LIST, GETUSER) describe exactly that, in Redis's formats, so tools
//! and clients that ask who they are get a true answer. The subcommands that
//! would change users, or read state walrus does not keep (the ACL log,
//! categories), answer an error that says so rather than an invented reply.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::super::Shared;
use super::super::frame::Reply;
use super::CommandResult;
use super::util::{help_reply, is, unknown_subcommand_or_arity};

/// The one user walrus has.
const USER: &str = "default";

const SINGLE_USER: &str = "walrus has a single user, 'default', who may run every command \
     (its password is the server's --auth-token-file); ACL users cannot be changed";

pub fn handles(name: &str) -> bool {
    name == "acl"
}

pub fn run(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let password = shared.config.auth_token.as_deref();
    match &args[1..] {
        [sub] if is(sub, "whoami") => Ok(Reply::Bulk(Bytes::from_static(USER.as_bytes()))),
        [sub] if is(sub, "users") => Ok(Reply::Array(vec![bulk(USER)])),
        [sub] if is(sub, "list") => Ok(Reply::Array(vec![bulk(&rule_line(password))])),
        [sub, user] if is(sub, "getuser") => Ok(match &user[..] == USER.as_bytes() {
            true => user_description(password),
            false => Reply::NullArray,
        }),
        [sub] if is(sub, "help") => Ok(help_reply(&[
            "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "WHOAMI",
            "    Return the current connection username (always 'default').",
            "USERS",
            "    List the usernames: walrus has one, 'default'.",
            "LIST",
            "    Show the user's rules in the ACL file format.",
            "GETUSER <username>",
            "    Get the user's flags, passwords and rules.",
            "HELP",
            "    Print this help.",
        ])),
        [sub, ..]
            if [
                "setuser", "deluser", "load", "save", "dryrun", "genpass", "log", "cat",
            ]
            .iter()
            .any(|word| is(sub, word)) =>
        {
            Err(Reply::err(SINGLE_USER))
        }
        _ => Err(unknown_subcommand_or_arity(&args[1], "ACL")),
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::from(text.to_string()))
}

/// The password as ACL shows it: `#` and its SHA-256 in hex, never the
/// password itself.
fn password_hash(password: &str) -> String {
    let digest = Sha256::digest(password.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("#{hex}")
}

/// The user's line in Redis 7.0's ACL file format.
fn rule_line(password: Option<&str>) -> String {
    let password = match password {
        Some(password) => password_hash(password),
        None => "nopass".to_string(),
    };
    format!("user {USER} on {password} ~* &* +@all")
}

/// ACL GETUSER default, in Redis 7.0's layout (the version HELLO names).
fn user_description(password: Option<&str>) -> Reply {
    let mut flags = vec![bulk("on")];
    if password.is_none() {
        flags.push(bulk("nopass"));
    }
    let passwords = password
        .map(|password| vec![bulk(&password_hash(password)[1..])])
        .unwrap_or_default();
    Reply::Map(vec![
        (bulk("flags"), Reply::Array(flags)),
        (bulk("passwords"), Reply::Array(passwords)),
        (bulk("commands"), bulk("+@all")),
        (bulk("keys"), bulk("~*")),
        (bulk("channels"), bulk("&*")),
        (bulk("selectors"), Reply::Array(Vec::new())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_shows_only_as_its_sha256() {
        // Redis's own: ACL SETUSER default >foobar, then ACL LIST.
        assert_eq!(
            password_hash("foobar"),
            "#c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
        assert_eq!(rule_line(None), "user default on nopass ~* &* +@all");
        assert!(!rule_line(Some("foobar")).contains("foobar"));
    }
}
