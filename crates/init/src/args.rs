//! The command line of `sandpit-init`, parsed by hand to keep the binary small.

use std::ffi::OsString;
use std::fmt;

/// Default bound of the sandbox log (`--log-max-bytes`).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;

/// How to run init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Inherited listening unix socket; `None` serves no requests.
    pub listen_fd: Option<i32>,
    /// Inherited log file (append mode); `None` discards the entrypoint's output.
    pub log_fd: Option<i32>,
    /// Bound of the log's disk use.
    pub log_max_bytes: u64,
    /// Inherited status file; `None` writes no status.
    pub status_fd: Option<i32>,
    /// Stay up after the entrypoint exits.
    pub keep_running: bool,
    /// User of the entrypoint (as in `ExecRequest::user`).
    pub user: Option<String>,
    /// Working directory of the entrypoint.
    pub cwd: Option<String>,
    /// The entrypoint's argument vector; empty for a sandbox without one.
    pub argv: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen_fd: Some(3),
            log_fd: Some(4),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            status_fd: Some(5),
            keep_running: false,
            user: None,
            cwd: None,
            argv: Vec::new(),
        }
    }
}

/// What is wrong with the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// An option that takes a value came last.
    MissingValue(String),
    /// A value that should be a number is not.
    NotANumber {
        /// The option.
        option: String,
        /// What was given.
        value: String,
    },
    /// An option init does not know.
    UnknownOption(String),
    /// An argument that is not valid UTF-8.
    NotUtf8(OsString),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingValue(option) => write!(f, "{option} needs a value"),
            Self::NotANumber { option, value } => write!(f, "{option}: '{value}' is not a number"),
            Self::UnknownOption(option) => write!(f, "unknown option {option}"),
            Self::NotUtf8(arg) => write!(f, "argument {arg:?} is not UTF-8"),
        }
    }
}

/// Usage text, for a bad command line.
pub const USAGE: &str = "usage: sandpit-init [--listen-fd N] [--log-fd N] [--log-max-bytes N] \
[--status-fd N] [--keep-running] [--user U] [--cwd DIR] [-- ARGV...]";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Options, ArgsError> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(ArgsError::NotUtf8)?;
        if arg == "--" {
            for rest in args.by_ref() {
                options.argv.push(rest.into_string().map_err(ArgsError::NotUtf8)?);
            }
            break;
        }
        if arg == "--keep-running" {
            options.keep_running = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        if !matches!(
            name.as_str(),
            "--listen-fd" | "--log-fd" | "--log-max-bytes" | "--status-fd" | "--user" | "--cwd"
        ) {
            return Err(ArgsError::UnknownOption(name));
        }
        let value = match inline {
            Some(value) => value,
            None => match args.next() {
                Some(value) => value.into_string().map_err(ArgsError::NotUtf8)?,
                None => return Err(ArgsError::MissingValue(name)),
            },
        };
        match name.as_str() {
            "--listen-fd" => options.listen_fd = parse_fd(&name, &value)?,
            "--log-fd" => options.log_fd = parse_fd(&name, &value)?,
            "--status-fd" => options.status_fd = parse_fd(&name, &value)?,
            "--log-max-bytes" => {
                options.log_max_bytes = value
                    .parse()
                    .map_err(|_| ArgsError::NotANumber { option: name.clone(), value: value.clone() })?;
            }
            "--user" => options.user = Some(value),
            _ => options.cwd = Some(value),
        }
    }
    Ok(options)
}

/// A descriptor number; a negative one means "none".
fn parse_fd(option: &str, value: &str) -> Result<Option<i32>, ArgsError> {
    let n: i32 = value
        .parse()
        .map_err(|_| ArgsError::NotANumber { option: option.to_owned(), value: value.to_owned() })?;
    Ok((n >= 0).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Options, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_use_descriptors_three_four_five() {
        let o = parse_strs(&[]).unwrap();
        assert_eq!((o.listen_fd, o.log_fd, o.status_fd), (Some(3), Some(4), Some(5)));
        assert_eq!(o.log_max_bytes, DEFAULT_LOG_MAX_BYTES);
        assert!(!o.keep_running && o.argv.is_empty());
    }

    #[test]
    fn options_and_argv_are_parsed() {
        let o = parse_strs(&[
            "--listen-fd",
            "7",
            "--log-fd=-1",
            "--status-fd",
            "-1",
            "--log-max-bytes",
            "4096",
            "--keep-running",
            "--user",
            "nobody",
            "--cwd=/tmp",
            "--",
            "sh",
            "-c",
            "--user x",
        ])
        .unwrap();
        assert_eq!(o.listen_fd, Some(7));
        assert_eq!(o.log_fd, None);
        assert_eq!(o.status_fd, None);
        assert_eq!(o.log_max_bytes, 4096);
        assert!(o.keep_running);
        assert_eq!(o.user.as_deref(), Some("nobody"));
        assert_eq!(o.cwd.as_deref(), Some("/tmp"));
        assert_eq!(o.argv, ["sh", "-c", "--user x"]);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert_eq!(parse_strs(&["--log-fd"]), Err(ArgsError::MissingValue("--log-fd".into())));
        assert!(matches!(parse_strs(&["--log-fd", "x"]), Err(ArgsError::NotANumber { .. })));
        assert_eq!(parse_strs(&["--frob"]), Err(ArgsError::UnknownOption("--frob".into())));
        assert_eq!(parse_strs(&["sh"]), Err(ArgsError::UnknownOption("sh".into())));
    }
}
