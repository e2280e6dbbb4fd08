//! Turning any failure into one line that says what to do.

use sandpit_client::{ClientError, Credentials};

/// The one-line message for `err`; `creds` says where the server and key came from.
pub fn explain(err: &anyhow::Error, creds: Option<&Credentials>) -> String {
    let Some(ce) = err.downcast_ref::<ClientError>() else {
        return format!("{err:#}");
    };
    let context = context_of(err);
    let message = match ce {
        ClientError::Connect { url, .. } => format!("no server at {url} — start one with `sandpit serve`"),
        ClientError::Api { status: 401, .. } => match creds {
            Some(c) => format!(
                "the server at {} refused the API key read from {}: set SANDPIT_API_KEY to a valid key \
                 (`sandpit serve` prints the first one and saves it in ~/.config/sandpit/credentials.json)",
                c.url, c.key_source
            ),
            None => "the server refused the API key: set SANDPIT_API_KEY to a valid key".into(),
        },
        ClientError::Api { body, .. } => match &body.field {
            Some(f) if !body.message.contains(f.as_str()) => format!("{} (field {f})", body.message),
            _ => body.message.clone(),
        },
        ClientError::Transport(_) => {
            let url = creds.map_or("the server", |c| c.url.as_str());
            format!("lost the connection to {url}: {}", chain(ce))
        }
        ClientError::Decode(_)
        | ClientError::Io(_)
        | ClientError::InvalidUrl { .. }
        | ClientError::InvalidKey => chain(ce),
    };
    match context {
        Some(c) => format!("{c}: {message}"),
        None => message,
    }
}

/// The outermost context attached to a client error, if any (`cp: …`).
fn context_of(err: &anyhow::Error) -> Option<String> {
    if err.downcast_ref::<ClientError>().is_some()
        && err.chain().next().is_some_and(|top| top.is::<ClientError>())
    {
        return None;
    }
    err.chain().next().map(ToString::to_string)
}

/// An error and its sources, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use sandpit_client::{CredentialSource, ErrorBody};

    fn creds() -> Credentials {
        Credentials {
            url: "http://127.0.0.1:7700".into(),
            api_key: "k".into(),
            url_source: CredentialSource::Default,
            key_source: CredentialSource::Env("SANDPIT_API_KEY"),
        }
    }

    fn api(status: u16, code: &str, message: &str, field: Option<&str>) -> anyhow::Error {
        let body = ErrorBody {
            code: code.into(),
            message: message.into(),
            field: field.map(Into::into),
            state: None,
        };
        ClientError::Api { status, body }.into()
    }

    #[test]
    fn a_refused_key_names_where_it_was_read_from() {
        let m = explain(&api(401, "unauthorized", "missing or invalid API key", None), Some(&creds()));
        assert!(m.contains("$SANDPIT_API_KEY") && m.contains("refused the API key"), "{m}");
    }

    #[test]
    fn invalid_input_names_the_field() {
        let m = explain(&api(400, "invalid_input", "must be between 10m and 64", Some("cpu")), None);
        assert_eq!(m, "must be between 10m and 64 (field cpu)");
        let m = explain(&api(400, "invalid_input", "cpu must be between 10m and 64", Some("cpu")), None);
        assert_eq!(m, "cpu must be between 10m and 64");
    }

    #[test]
    fn context_prefixes_the_servers_message() {
        let e = Err::<(), _>(api(404, "not_found", "path /x not found", None)).context("cp").unwrap_err();
        assert_eq!(explain(&e, None), "cp: path /x not found");
    }
}
