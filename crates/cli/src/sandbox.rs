//! The lifecycle verbs: create (with a progress spinner), list, get, pause, resume, delete,
//! timeout, and projects.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sandpit_client::api::{CreateSandbox, EventKind, ImageSpec, SandboxView};
use sandpit_client::{Client, ListFilter};
use sandpit_types::SandboxState;
use time::OffsetDateTime;

use crate::cli::{CreateArgs, ListArgs, TimeoutArgs};
use crate::output::{print_json, project_table, sandbox_details, sandbox_table, short_span};

/// The request `create` sends; `password` is the registry password read from stdin.
pub fn create_request(a: &CreateArgs, password: Option<String>) -> CreateSandbox {
    let image = match (&a.image, &a.image_username) {
        (Some(r), Some(u)) => {
            Some(ImageSpec::WithCredentials { reference: r.clone(), username: Some(u.clone()), password })
        }
        (r, _) => r.clone().map(ImageSpec::Reference),
    };
    CreateSandbox {
        name: a.name.clone(),
        project: a.project.clone(),
        image,
        cpu: a.cpu,
        memory: a.memory,
        gpu: a.gpu.clone(),
        timeout_s: a.timeout.map(|d| d.as_secs()),
        env: a.env.iter().cloned().collect(),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        keep_running: a.keep_running,
        metadata: a.metadata.iter().cloned().collect(),
    }
}

/// `sandpit create`.
pub async fn create(client: &Client, a: &CreateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let password = if a.image_password_stdin { Some(crate::read_password_stdin()?) } else { None };
    let req = create_request(a, password);
    let mut view = client.create(&req, false).await?;
    if a.wait && view.state == SandboxState::Provisioning {
        view = wait_until_provisioned(client, &view).await?;
    }
    if json {
        print_json(&view)?;
    } else {
        println!("{}", sandbox_details(&view, OffsetDateTime::now_utc()));
    }
    if a.wait && view.state == SandboxState::Failed {
        let reason = view.state_reason.as_deref().unwrap_or("no reason given");
        anyhow::bail!("sandbox {} failed: {reason}", view.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the sandbox's events with a spinner until it leaves `provisioning`.
async fn wait_until_provisioned(client: &Client, view: &SandboxView) -> anyhow::Result<SandboxView> {
    let id = view.id.to_string();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("provisioning {id}"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = async {
        let mut events = client.events(&id, 0).await?;
        // Pull progress per layer: (done, total).
        let mut layers: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
        while let Some(ev) = events.next().await {
            let ev = ev?;
            match (ev.kind, ev.state) {
                (EventKind::State, Some(s)) if s != SandboxState::Provisioning => break,
                (_, _) => {
                    if let Some(p) = &ev.progress
                        && let (Some(layer), Some(done), Some(total)) =
                            (p["layer"].as_str(), p["done_bytes"].as_u64(), p["total_bytes"].as_u64())
                    {
                        layers.insert(layer.to_string(), (done, total));
                        let (done, total) = layers.values().fold((0, 0), |(d, t), (a, b)| (d + a, t + b));
                        spinner.set_message(format!(
                            "pulling {} for {id}: {} / {} ({} layers)",
                            p["image"].as_str().unwrap_or("the image"),
                            sandpit_types::ByteSize(done),
                            sandpit_types::ByteSize(total),
                            layers.len()
                        ));
                    } else if let Some(m) = ev.message {
                        spinner.set_message(format!("provisioning {id}: {m}"));
                    }
                }
            }
        }
        anyhow::Ok(client.get(&id).await?)
    }
    .await;
    spinner.finish_and_clear();
    result
}

/// `sandpit list`.
pub async fn list(client: &Client, a: &ListArgs, json: bool) -> anyhow::Result<ExitCode> {
    let filter = ListFilter {
        project: a.project.clone(),
        states: a.state.clone(),
        metadata: a.metadata.clone(),
        ..Default::default()
    };
    let (items, more) = if a.all {
        (client.list_all(&filter).await?, false)
    } else {
        let page = client.list(&filter).await?;
        (page.items, page.next_cursor.is_some())
    };
    if json {
        print_json(&items)?;
    } else if items.is_empty() {
        eprintln!("no sandboxes");
    } else {
        println!("{}", sandbox_table(&items, OffsetDateTime::now_utc()));
        if more {
            eprintln!("(more sandboxes exist: use --all to list every page)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a sandbox after a verb, as JSON or details.
fn show(view: &SandboxView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(view)?;
    } else {
        println!("{}", sandbox_details(view, OffsetDateTime::now_utc()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit get`.
pub async fn get(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    show(&client.get(id).await?, json)
}

/// `sandpit pause`.
pub async fn pause(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let v = client.pause(id).await?;
    if json {
        return show(&v, true);
    }
    let left =
        v.remaining_s.map(|r| format!(" ({} of running time left)", short_span(r))).unwrap_or_default();
    println!("paused {}{left}", v.id);
    Ok(ExitCode::SUCCESS)
}

/// `sandpit resume`.
pub async fn resume(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let v = client.resume(id).await?;
    if json {
        return show(&v, true);
    }
    println!("resumed {} ({})", v.id, v.state);
    Ok(ExitCode::SUCCESS)
}

/// `sandpit delete`.
pub async fn delete(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    client.delete(id).await?;
    if json {
        print_json(&serde_json::json!({ "id": id, "deleted": true }))?;
    } else {
        println!("deleted {id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit timeout`.
pub async fn timeout(client: &Client, a: &TimeoutArgs, json: bool) -> anyhow::Result<ExitCode> {
    let v = client.set_timeout(&a.id, a.duration).await.context("timeout")?;
    if json {
        return show(&v, true);
    }
    let now = OffsetDateTime::now_utc();
    println!("{}: ends {}", v.id, crate::output::ends(&v, now));
    Ok(ExitCode::SUCCESS)
}

/// `sandpit projects`.
pub async fn gpus(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let gs = client.gpus().await?;
    if json {
        print_json(&gs)?;
    } else if gs.is_empty() {
        println!("this server has no GPUs");
    } else {
        println!("{}", crate::output::gpu_table(&gs));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit projects`.
pub async fn projects(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let ps = client.projects().await?;
    if json {
        print_json(&ps)?;
    } else {
        println!("{}", project_table(&ps, OffsetDateTime::now_utc()));
    }
    Ok(ExitCode::SUCCESS)
}
