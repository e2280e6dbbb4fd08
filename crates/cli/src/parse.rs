//! Parsers of flag values (`--gpu H100:2@50%`, `--env K=V`, `--timeout 1h`…), so that bad
//! input is refused before anything is sent, with a message naming what is wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use sandpit_types::api::GpuRequest;
use sandpit_types::{ByteSize, EnvVars, MilliCpu, SandboxState};

/// `--cpu`: `1`, `0.5`, `500m`.
pub fn cpu(s: &str) -> Result<MilliCpu, String> {
    let c: MilliCpu = s.parse().map_err(|e| format!("{e}"))?;
    if c.0 == 0 {
        return Err("CPU must be more than 0".into());
    }
    Ok(c)
}

/// `--memory`: `2Gi`, `512Mi`.
pub fn memory(s: &str) -> Result<ByteSize, String> {
    let m: ByteSize = s.parse().map_err(|e| format!("{e}"))?;
    if m.0 == 0 {
        return Err("memory must be more than 0".into());
    }
    Ok(m)
}

/// `--gpu`: `TYPE[:COUNT][@FRACTION[%]]`.
pub fn gpu(s: &str) -> Result<GpuRequest, String> {
    let syntax =
        || format!("{s:?} is not a GPU request: use TYPE[:COUNT][@FRACTION%], e.g. H100, A100:2, H100@50%");
    let (rest, fraction) = match s.split_once('@') {
        Some((r, f)) => {
            let f = f.strip_suffix('%').unwrap_or(f);
            (
                r,
                Some(
                    f.parse::<u32>()
                        .map_err(|_| format!("GPU fraction {f:?} must be 25, 50, 75 or 100 (percent)"))?,
                ),
            )
        }
        None => (s, None),
    };
    let (gpu_type, count) = match rest.split_once(':') {
        Some((t, c)) => {
            (t, Some(c.parse::<u32>().map_err(|_| format!("GPU count {c:?} must be a number from 1 to 8"))?))
        }
        None => (rest, None),
    };
    if gpu_type.is_empty() || gpu_type.contains(char::is_whitespace) {
        return Err(syntax());
    }
    let req = GpuRequest {
        gpu_type: gpu_type.to_string(),
        count: count.unwrap_or(1),
        fraction: fraction.unwrap_or(100),
    };
    req.validate().map_err(|e| e.to_string())?;
    Ok(req)
}

/// `--timeout` and durations: whole seconds (`3600`) or a duration (`1h`, `90m`, `1h30m`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{t:?} is not a duration: {e} (use seconds or e.g. 90s, 10m, 1h30m)"))?,
    };
    if d.subsec_nanos() != 0 {
        return Err(format!("{t:?} is not a whole number of seconds"));
    }
    if d.is_zero() {
        return Err("the duration must be at least one second".into());
    }
    Ok(d)
}

/// `--env NAME=VALUE`: the name is checked as the server checks it.
pub fn env_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    EnvVars::new(BTreeMap::from([(k.to_string(), v.to_string())])).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// `--metadata KEY=VALUE` of create.
pub fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `--metadata KEY:VALUE` of list.
pub fn label_filter(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or_else(|| format!("{s:?} is not KEY:VALUE"))?;
    if k.is_empty() || k.contains(',') || v.contains(',') {
        return Err(format!("{s:?}: the key must not be empty, and neither key nor value may hold ','"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `--state`.
pub fn state(s: &str) -> Result<SandboxState, String> {
    SandboxState::parse(s.trim()).ok_or_else(|| {
        format!("unknown state {s:?}: use provisioning, running, paused, terminated or failed")
    })
}

/// One side of `cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpSide {
    /// A path inside a sandbox.
    Remote {
        /// Sandbox id or name.
        sandbox: String,
        /// Path inside it.
        path: String,
    },
    /// Standard input or output.
    Std,
    /// A local path.
    Local(std::path::PathBuf),
}

/// Reads `ID:/path`, `-`, or a local path. A local path with a `:` can be written `./a:b`.
pub fn cp_side(s: &str) -> CpSide {
    if s == "-" {
        return CpSide::Std;
    }
    if let Some((id, path)) = s.split_once(':')
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return CpSide::Remote { sandbox: id.to_string(), path: path.to_string() };
    }
    CpSide::Local(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_requests_parse_type_count_and_fraction() {
        let g = gpu("H100:2@50%").unwrap();
        assert_eq!((g.gpu_type.as_str(), g.count, g.fraction), ("H100", 2, 50));
        let g = gpu("A100-80GB").unwrap();
        assert_eq!((g.count, g.fraction), (1, 100));
        assert_eq!(gpu("T4@25").unwrap().fraction, 25);
    }

    #[test]
    fn bad_gpu_requests_say_which_part_is_wrong() {
        assert!(gpu("H100@30%").unwrap_err().contains("fraction"));
        assert!(gpu("H100:x").unwrap_err().contains("count"));
        assert!(gpu("H100:9").unwrap_err().contains("count"));
        assert!(gpu(":2").unwrap_err().contains("TYPE"));
    }

    #[test]
    fn durations_are_seconds_or_human_durations() {
        assert_eq!(duration("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(duration("0").is_err());
        assert!(duration("soon").unwrap_err().contains("not a duration"));
        assert!(duration("1500ms").is_err());
    }

    #[test]
    fn env_vars_need_an_equals_sign_and_a_valid_name() {
        assert_eq!(env_var("A=b=c").unwrap(), ("A".to_string(), "b=c".to_string()));
        assert!(env_var("A").unwrap_err().contains("NAME=VALUE"));
        assert!(env_var("1A=x").unwrap_err().contains("1A"));
    }

    #[test]
    fn quantities_reject_nonsense_and_zero() {
        assert_eq!(cpu("500m").unwrap(), MilliCpu(500));
        assert!(cpu("0").is_err());
        assert!(cpu("two").unwrap_err().contains("CPU amount"));
        assert_eq!(memory("2Gi").unwrap(), ByteSize::gib(2));
        assert!(memory("lots").is_err());
    }

    #[test]
    fn cp_sides_tell_sandbox_paths_from_local_ones() {
        assert_eq!(cp_side("abc:/tmp/x"), CpSide::Remote { sandbox: "abc".into(), path: "/tmp/x".into() });
        assert_eq!(cp_side("-"), CpSide::Std);
        assert_eq!(cp_side("./a:b"), CpSide::Local("./a:b".into()));
        assert_eq!(cp_side("/tmp/x"), CpSide::Local("/tmp/x".into()));
    }
}
