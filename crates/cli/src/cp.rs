//! `sandpit cp`: streams one file into a sandbox (from a local file or stdin) or out of one (to a
//! local file or stdout). Memory stays bounded whatever the size. Directories are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use sandpit_client::Client;
use sandpit_client::api::FileKindView;

use crate::cli::CpArgs;
use crate::output::print_json;
use crate::parse::{CpSide, cp_side};

const NO_DIRS: &str = "copying directories is not supported; copy files one at a time";

/// `sandpit cp`.
pub async fn cp(client: &Client, a: &CpArgs, json: bool) -> anyhow::Result<ExitCode> {
    match (cp_side(&a.src), cp_side(&a.dst)) {
        (CpSide::Remote { sandbox, path }, dst @ (CpSide::Local(_) | CpSide::Std)) => {
            download(client, &sandbox, &path, dst, json).await
        }
        (src @ (CpSide::Local(_) | CpSide::Std), CpSide::Remote { sandbox, path }) => {
            upload(client, src, &sandbox, &path, json).await
        }
        (CpSide::Remote { .. }, CpSide::Remote { .. }) => {
            bail!(
                "cp: copying from one sandbox to another is not supported: download to a local file, then upload"
            )
        }
        _ => bail!(
            "cp: one side must be a sandbox path, written ID:/path (e.g. `sandpit cp data.csv ID:/tmp/data.csv`)"
        ),
    }
}

fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

async fn upload(
    client: &Client,
    src: CpSide,
    sandbox: &str,
    path: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if path.is_empty() {
        bail!("cp: give a path inside the sandbox, e.g. {sandbox}:/tmp/file");
    }
    let local_name = match &src {
        CpSide::Local(p) => p.file_name().and_then(|n| n.to_str()).map(str::to_string),
        _ => None,
    };
    // Copying to a directory puts the file inside it, under its own name.
    let is_dir = path.ends_with('/')
        || match client.stat(sandbox, path).await {
            Ok(e) => e.kind == FileKindView::Dir,
            Err(e) if e.is_not_found() && e.code() == Some("not_found") => false,
            Err(e) => return Err(e).context("cp"),
        };
    let target = if is_dir {
        let Some(name) = &local_name else {
            bail!("cp: {sandbox}:{path} is a directory: give the file's full path when copying from stdin")
        };
        format!("{}/{name}", path.trim_end_matches('/'))
    } else {
        path.to_string()
    };
    let entry = match src {
        CpSide::Local(p) => {
            let meta = tokio::fs::metadata(&p).await.with_context(|| format!("cp: {}", p.display()))?;
            if meta.is_dir() {
                bail!("cp: {} is a directory: {NO_DIRS}", p.display());
            }
            let file = tokio::fs::File::open(&p).await.with_context(|| format!("cp: {}", p.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            client.upload(sandbox, &target, file, Some(mode)).await.context("cp")?
        }
        _ => client.upload(sandbox, &target, tokio::io::stdin(), None).await.context("cp")?,
    };
    if json {
        print_json(&entry)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn download(
    client: &Client,
    sandbox: &str,
    path: &str,
    dst: CpSide,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if path.is_empty() {
        bail!("cp: give a path inside the sandbox, e.g. {sandbox}:/tmp/file");
    }
    let entry = client.stat(sandbox, path).await.context("cp")?;
    if entry.kind == FileKindView::Dir {
        bail!("cp: {sandbox}:{path} is a directory: {NO_DIRS}");
    }
    match dst {
        CpSide::Local(p) => {
            let target = if p.is_dir() {
                let name = base_name(path).context("cp: the sandbox path has no file name")?;
                p.join(name)
            } else {
                p
            };
            download_file(client, sandbox, path, &target).await?;
            if json {
                print_json(&entry)?;
            }
        }
        _ => {
            let mut out = tokio::io::stdout();
            client.download(sandbox, path, &mut out).await.context("cp")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads into a temporary file beside `target`, renamed over it once complete, so that a
/// failed copy leaves no half file.
async fn download_file(client: &Client, sandbox: &str, path: &str, target: &Path) -> anyhow::Result<()> {
    let part = part_path(target);
    let result = async {
        let mut f =
            tokio::fs::File::create(&part).await.with_context(|| format!("cp: {}", part.display()))?;
        client.download(sandbox, path, &mut f).await.context("cp")?;
        f.sync_all().await.with_context(|| format!("cp: {}", part.display()))?;
        tokio::fs::rename(&part, target).await.with_context(|| format!("cp: {}", target.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

fn part_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.sandpit-part"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_ignore_trailing_slashes_and_dots() {
        assert_eq!(base_name("/tmp/a.txt"), Some("a.txt"));
        assert_eq!(base_name("/tmp/dir/"), Some("dir"));
        assert_eq!(base_name("/"), None);
        assert_eq!(base_name(".."), None);
    }

    #[test]
    fn partial_downloads_sit_beside_their_target() {
        assert_eq!(part_path(Path::new("/x/y.bin")), PathBuf::from("/x/.y.bin.sandpit-part"));
    }
}
