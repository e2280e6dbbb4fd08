//! `sandpit image`: the catalog and the store through the API, and `build`, which runs locally
//! on the server's machine (it writes into the server's image store, which several processes
//! may share).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sandpit_client::Client;
use sandpit_client::api::{PullEvent, PullImage};
use sandpit_image::build::RunConfig;
use sandpit_image::debian::Recipe;
use sandpit_image::{Catalog, IdShift, ImageReference, ImageStore};
use sandpit_types::ByteSize;

use crate::cli::{ImageBuildArgs, ImageCommand, ImageImportArgs, LocalServerArgs};
use crate::output::{human_bytes, print_json, trim_lines};

/// The client subcommands.
pub async fn run(client: &Client, c: &ImageCommand, json: bool) -> anyhow::Result<ExitCode> {
    match c {
        ImageCommand::Ls => {
            let v = client.images().await?;
            if json {
                print_json(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new();
            t.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
            t.set_header(["NAME", "CATEGORY", "REFERENCE", "STATUS", "DESCRIPTION"]);
            for c in &v.curated {
                let status = match (c.available, &c.build) {
                    (true, _) => c.size.map_or("ready".to_string(), |s| format!("ready, {}", human_bytes(s))),
                    (false, Some(recipe)) => format!("run `sandpit image build {recipe}`"),
                    (false, None) => "pulled on first use".to_string(),
                };
                t.add_row([
                    c.name.clone(),
                    c.category.clone(),
                    c.reference.clone(),
                    status,
                    c.description.clone(),
                ]);
            }
            println!("{}\n", trim_lines(&t.to_string()));
            let mut l = Table::new();
            l.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
            l.set_header(["IMAGE", "SIZE", "SOURCE", "DIGEST"]);
            for i in &v.local {
                let source = if i.private { format!("{} (private)", i.source) } else { i.source.clone() };
                l.add_row([
                    i.references.join(", "),
                    human_bytes(i.size),
                    source,
                    i.digest.chars().take(19).collect(),
                ]);
            }
            println!("{}", trim_lines(&l.to_string()));
        }
        ImageCommand::Pull(a) => {
            let password = if a.password_stdin { Some(crate::read_password_stdin()?) } else { None };
            let req = PullImage { reference: a.reference.clone(), username: a.username.clone(), password };
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} pulling {msg} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(a.reference.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            let mut layers: std::collections::BTreeMap<String, (u64, u64)> =
                std::collections::BTreeMap::new();
            let mut stream = client.pull_image(&req).await?;
            while let Some(ev) = stream.next().await {
                match ev? {
                    PullEvent::Progress { layer, done_bytes, total_bytes, .. } => {
                        layers.insert(layer, (done_bytes, total_bytes));
                        let (d, t) = layers.values().fold((0, 0), |(d, t), (a, b)| (d + a, t + b));
                        bar.set_length(t);
                        bar.set_position(d);
                    }
                    PullEvent::Done { image } => {
                        bar.finish_and_clear();
                        if json {
                            print_json(&image)?;
                        } else {
                            println!(
                                "pulled {} ({}, {})",
                                a.reference,
                                human_bytes(image.size),
                                image.digest
                            );
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    PullEvent::Error { code, message } => {
                        bar.finish_and_clear();
                        bail!("{code}: {message}");
                    }
                }
            }
            bar.finish_and_clear();
            bail!("the pull ended without an answer");
        }
        ImageCommand::Rm(a) => {
            client.remove_image(&a.reference).await?;
            if !json {
                println!("removed {}", a.reference);
            }
        }
        ImageCommand::Prune => {
            let r = client.prune_images().await?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "removed {} images and {} layers, freed {}",
                    r.removed_references.len(),
                    r.removed_layers,
                    human_bytes(r.freed)
                );
            }
        }
        ImageCommand::Build(_) | ImageCommand::Import(_) => bail!("build and import run locally"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's configuration and image store, opened on this machine by a command that writes
/// into it directly (the store is safe to share with a running server).
fn local_store(
    local: &LocalServerArgs,
    verb: &str,
) -> anyhow::Result<(sandpit_server::ServerConfig, Arc<ImageStore>)> {
    let mut config = sandpit_server::ServerConfig::load(local.config.as_deref())?;
    if let Some(d) = &local.data_dir {
        config.data_dir = d.clone();
    }
    if !rustix::process::geteuid().is_root() {
        bail!("`sandpit image {verb}` needs root (it writes files owned by the sandboxes' uids)");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create {}", config.data_dir.display()))?;
    let shift = IdShift::new(config.uid_base, 65536)?;
    let store =
        Arc::new(ImageStore::open(config.images_dir(), shift)?.with_max_image_size(config.max_image_bytes));
    Ok((config, store))
}

/// `sandpit image import`: an OCI layout, an oci-archive or a root file system directory into
/// the server's store on this machine.
pub async fn import(a: &ImageImportArgs) -> anyhow::Result<ExitCode> {
    let reference = ImageReference::parse(&a.reference).with_context(|| format!("--as {:?}", a.reference))?;
    let meta = std::fs::metadata(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let kind = if meta.is_file() {
        "oci-archive"
    } else if a.path.join("oci-layout").is_file() && a.path.join("index.json").is_file() {
        "OCI layout"
    } else {
        "root file system"
    };
    if kind != "root file system" && !a.cmd.is_empty() {
        bail!("--cmd applies to a root file system directory; {} is an {kind}", a.path.display());
    }
    let (_, store) = local_store(&a.local, "import")?;
    let (path, name, cmd, r) = (a.path.clone(), a.name.clone(), a.cmd.clone(), reference.clone());
    let rec = tokio::task::spawn_blocking(move || match kind {
        "oci-archive" => store.import_oci_archive(&path, name.as_deref(), &r),
        "OCI layout" => store.import_oci_layout(&path, name.as_deref(), &r),
        _ => {
            let run = RunConfig {
                env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
                cmd,
                ..RunConfig::default()
            };
            sandpit_image::build::import_directory(&store, &path, &run, &r)
        }
    })
    .await??;
    println!(
        "imported {} ({kind}) as {} ({}, {})",
        a.path.display(),
        reference.as_str(),
        human_bytes(ByteSize(rec.size.bytes())),
        rec.manifest_digest
    );
    Ok(ExitCode::SUCCESS)
}

/// `sandpit image build`: builds curated images into the server's store on this machine.
pub async fn build(a: &ImageBuildArgs) -> anyhow::Result<ExitCode> {
    if !sandpit_image::debian::available() {
        bail!("mmdebstrap is not installed: apt-get install mmdebstrap");
    }
    let (config, store) = local_store(&a.local, "build")?;
    let catalog = Catalog::load_or_init(&config.catalog_path())?;
    let buildable: Vec<_> = catalog.images.iter().filter(|e| e.build.is_some()).collect();
    let chosen: Vec<_> = if a.names.is_empty() {
        buildable.clone()
    } else {
        let mut out = Vec::new();
        for n in &a.names {
            let e = buildable
                .iter()
                .find(|e| &e.name == n || e.build.as_deref() == Some(n.as_str()))
                .with_context(|| {
                    format!(
                        "{n:?} is not a buildable curated image (buildable: {})",
                        buildable.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?;
            out.push(*e);
        }
        out
    };
    for entry in chosen {
        let recipe_name = entry.build.clone().unwrap_or_default();
        let recipe = Recipe::parse(&recipe_name)
            .with_context(|| format!("unknown recipe {recipe_name:?} in the catalog"))?;
        let reference = ImageReference::parse(&entry.reference)?;
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(format!(
            "building {} ({}) with mmdebstrap: {}",
            entry.name,
            reference.as_str(),
            recipe.packages().join(" ")
        ));
        spinner.enable_steady_tick(Duration::from_millis(200));
        let (s, m, r) = (store.clone(), a.mirror.clone(), reference.clone());
        let rec =
            tokio::task::spawn_blocking(move || sandpit_image::debian::build(&s, recipe, &r, m.as_deref()))
                .await?;
        spinner.finish_and_clear();
        let rec = rec?;
        println!(
            "built {} as {} ({})",
            entry.name,
            reference.as_str(),
            human_bytes(ByteSize(rec.size.bytes()))
        );
    }
    Ok(ExitCode::SUCCESS)
}
