//! One client connection: read requests, run them in order, write replies.
//!
//! Everything already buffered is served as one batch. Writes that need no
//! read ("blind" writes: SET, MSET, DEL…) are submitted to the store one after
//! another without waiting, so a pipeline of them shares one group commit; a
//! command that reads first waits for the writes before it (a pipeline sees
//! its own writes). Replies are encoded in request order and sent once the
//! batch is done, so a write's reply leaves only after its sync.

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Shared;
use super::cmd::{self, Finish, Session};
use super::frame::{Reply, take_request};
use crate::store::Submission;

/// Replies not yet encoded, in request order.
#[derive(Default)]
struct Pipeline {
    replies: VecDeque<Pending>,
}

enum Pending {
    Ready(Reply),
    Write(Submission, Finish),
}

impl Pipeline {
    /// Waits for every submitted write and encodes all replies into `output`.
    async fn finish(&mut self, output: &mut BytesMut) {
        while let Some(pending) = self.replies.pop_front() {
            let reply = match pending {
                Pending::Ready(reply) => reply,
                Pending::Write(submission, finish) => match submission.await {
                    Ok(outcome) => finish.reply(outcome),
                    Err(error) => cmd::store_error(&error),
                },
            };
            reply.encode(output);
        }
    }
}

pub async fn run(
    mut stream: TcpStream,
    id: u64,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut session = Session::new(id, shared.config.auth_token.is_none());
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = BytesMut::with_capacity(16 << 10);
    loop {
        let read = tokio::select! {
            read = stream.read_buf(&mut input) => read,
            _ = shutdown.wait_for(|&stop| stop) => break,
        };
        if !matches!(read, Ok(count) if count > 0) {
            break;
        }
        let keep_open = serve_buffered(&mut session, shared, &mut input, &mut output).await;
        if stream.write_all(&output).await.is_err() || !keep_open {
            break;
        }
        output.clear();
        if output.capacity() > 1 << 20 {
            output = BytesMut::with_capacity(16 << 10);
        }
    }
    let _ = stream.shutdown().await;
}

/// Serves every whole request in `input`; false when the connection must close
/// (QUIT, or a protocol error).
async fn serve_buffered(
    session: &mut Session,
    shared: &Shared,
    input: &mut BytesMut,
    output: &mut BytesMut,
) -> bool {
    let mut pipeline = Pipeline::default();
    loop {
        let args = match take_request(input, &shared.config.limits) {
            Ok(Some(args)) => args,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(client = session.id, %error, "closing a RESP connection");
                pipeline.finish(output).await;
                Reply::err(error).encode(output);
                return false;
            }
        };
        if args.is_empty() {
            continue;
        }
        shared
            .stats
            .total_commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match cmd::plan_blind_write(session, shared, &args) {
            Some(Ok((command, finish))) => pipeline
                .replies
                .push_back(Pending::Write(shared.store.submit(command), finish)),
            Some(Err(reply)) => pipeline.replies.push_back(Pending::Ready(reply)),
            None => {
                pipeline.finish(output).await;
                let reply = cmd::execute(session, shared, &args).await;
                reply.encode(output);
                if session.quit {
                    return false;
                }
            }
        }
    }
    pipeline.finish(output).await;
    if input.capacity() > 4 << 20 && input.is_empty() {
        *input = BytesMut::with_capacity(16 << 10);
    }
    true
}
