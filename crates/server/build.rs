//! Embeds the web console's build (`web/dist`, made by `npm --prefix web run build`) into the
//! server, so that one binary serves it. Without a build (no Node here) it embeds a placeholder
//! page that says how to make one: `cargo build` never needs Node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sandpit</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem">
<h1>sandpit</h1>
<p>The web console is not built into this binary. Build it, then build sandpit again:</p>
<pre>npm --prefix web ci &amp;&amp; npm --prefix web run build
cargo build -p sandpit-cli --bin sandpit</pre>
<p>The API is at <code>/v1</code> (<a href="/v1/openapi.json">OpenAPI document</a>).</p>
</body></html>
"#;

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let web = manifest.join("../../web");
    let dist = web.join("dist");
    let (root, built) = if dist.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dist.display());
        (dist, true)
    } else {
        // Watch the folder the build will appear in (watching a missing path would rebuild
        // this crate every time).
        if web.is_dir() {
            println!("cargo:rerun-if-changed={}", web.display());
        }
        let placeholder = out.join("web-placeholder");
        std::fs::create_dir_all(&placeholder)?;
        std::fs::write(placeholder.join("index.html"), PLACEHOLDER)?;
        (placeholder, false)
    };
    let mut files = Vec::new();
    collect(&root, &root, &mut files)?;
    files.sort();
    let mut code = String::from("/// Every file of the web console's build: (path below the root, bytes).\n");
    code.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        writeln!(code, "    ({rel:?}, include_bytes!({abs:?})),")?;
    }
    code.push_str("];\n/// Whether these are a real build (not the placeholder page).\n");
    writeln!(code, "pub const BUILT: bool = {built};")?;
    std::fs::write(out.join("web_assets.rs"), code)?;
    Ok(())
}

/// Every regular file under `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, files)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root)?;
            let (Some(rel), Some(abs)) = (rel.to_str(), path.canonicalize()?.to_str().map(String::from))
            else {
                continue;
            };
            files.push((rel.replace('\\', "/"), abs));
        }
    }
    Ok(())
}
