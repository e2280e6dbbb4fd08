//! Decoding streamed answers: newline-delimited JSON (exec) and server-sent events (logs,
//! events).

use bytes::{Buf, BytesMut};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::Response;
use sandpit_types::api::{LogEntry, SandboxEventView};
use serde::de::DeserializeOwned;

use crate::client::ApiStream;
use crate::error::{ClientError, Result};

/// Longest NDJSON line accepted (an exec output chunk is far smaller).
const MAX_LINE: usize = 16 << 20;

/// One JSON value per line of the body, decoded as lines complete.
pub(crate) fn ndjson<T: DeserializeOwned + Send + 'static>(resp: Response, url: String) -> ApiStream<T> {
    let bytes = resp.bytes_stream().map(move |r| r.map_err(|e| ClientError::transport(&url, e)));
    lines_json(bytes).boxed()
}

/// Splits a byte stream into lines and decodes each non-blank one.
fn lines_json<T, S>(bytes: S) -> impl Stream<Item = Result<T>>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<bytes::Bytes>> + Unpin,
{
    futures::stream::unfold((bytes, BytesMut::new(), false), |(mut src, mut buf, mut done)| async move {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.trim_ascii().is_empty() {
                    continue;
                }
                let item = serde_json::from_slice(line).map_err(|e| ClientError::Decode(e.to_string()));
                return Some((item, (src, buf, done)));
            }
            if done {
                if buf.trim_ascii().is_empty() {
                    return None;
                }
                let rest = buf.split();
                let item = serde_json::from_slice(&rest).map_err(|e| ClientError::Decode(e.to_string()));
                return Some((item, (src, buf, done)));
            }
            match src.next().await {
                Some(Ok(chunk)) => {
                    if buf.len() + chunk.remaining() > MAX_LINE {
                        let e =
                            ClientError::Decode(format!("a streamed line is longer than {MAX_LINE} bytes"));
                        return Some((Err(e), (src, BytesMut::new(), true)));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Some((Err(e), (src, BytesMut::new(), true))),
                None => done = true,
            }
        }
    })
}

/// What one server-sent event means to a reader.
enum Sse<T> {
    Item(T),
    Skip,
    End,
}

/// Decodes server-sent events with `decode` until it says the stream ended, the connection
/// closes, or an error.
fn sse<T, F>(resp: Response, url: String, decode: F) -> ApiStream<T>
where
    T: Send + 'static,
    F: Fn(&eventsource_stream::Event) -> Result<Sse<T>> + Send + 'static,
{
    let events = resp.bytes_stream().eventsource();
    futures::stream::unfold((events, decode, url, false), |(mut events, decode, url, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match events.next().await? {
                Ok(ev) => match decode(&ev) {
                    Ok(Sse::Item(t)) => return Some((Ok(t), (events, decode, url, false))),
                    Ok(Sse::Skip) => {}
                    Ok(Sse::End) => return None,
                    Err(e) => return Some((Err(e), (events, decode, url, true))),
                },
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    let e = ClientError::transport(&url, e);
                    return Some((Err(e), (events, decode, url, true)));
                }
                Err(e) => {
                    return Some((Err(ClientError::Decode(e.to_string())), (events, decode, url, true)));
                }
            }
        }
    })
    .boxed()
}

fn data<T: DeserializeOwned>(ev: &eventsource_stream::Event) -> Result<T> {
    serde_json::from_str(&ev.data).map_err(|e| ClientError::Decode(format!("{} event: {e}", ev.event)))
}

/// `event: log` entries until `event: end`.
pub(crate) fn sse_logs(resp: Response, url: String) -> ApiStream<LogEntry> {
    sse(resp, url, |ev| match ev.event.as_str() {
        "log" => data(ev).map(Sse::Item),
        "end" => Ok(Sse::End),
        _ => Ok(Sse::Skip),
    })
}

/// `event: state` and `event: progress` until the server closes the stream.
pub(crate) fn sse_events(resp: Response, url: String) -> ApiStream<SandboxEventView> {
    sse(resp, url, |ev| match ev.event.as_str() {
        "state" | "progress" => data(ev).map(Sse::Item),
        _ => Ok(Sse::Skip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sandpit_types::api::ExecStreamEvent;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn ndjson_lines_split_across_chunks_decode_in_order() {
        let src = chunks(&[
            "{\"event\":\"started\",\"pid\":7}\n{\"event\":\"std",
            "out\",\"data\":\"aGk=\"}\n\n",
            "{\"event\":\"exited\",\"exit_code\":3,\"signal\":null,\"timed_out\":false}",
        ]);
        let got: Vec<ExecStreamEvent> = lines_json(src).map(|r| r.unwrap()).collect().await;
        assert_eq!(
            got,
            vec![
                ExecStreamEvent::Started { pid: 7 },
                ExecStreamEvent::Stdout { data: "aGk=".into() },
                ExecStreamEvent::Exited { exit_code: Some(3), signal: None, timed_out: false },
            ]
        );
    }

    #[tokio::test]
    async fn a_malformed_ndjson_line_is_a_decode_error() {
        let got: Vec<Result<ExecStreamEvent>> = lines_json(chunks(&["not json\n"])).collect().await;
        assert!(matches!(got.as_slice(), [Err(ClientError::Decode(_))]));
    }
}
