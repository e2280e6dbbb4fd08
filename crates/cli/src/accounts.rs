//! Accounts and billing verbs: `whoami`, `user`, `project`, `key`, `kyc`, `wallet`, `estimate`,
//! `usage`.

use std::process::ExitCode;

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use sandpit_client::accounts::{CreateKey, CreateUser, CreditWallet, EstimateRequest, KycView, UsageQuery};
use sandpit_client::{Client, LedgerPage};
use time::OffsetDateTime;

use crate::cli::{
    EstimateArgs, KeyCommand, KycCommand, ProjectCommand, UsageArgs, UserCommand, WalletCommand,
};
use crate::output::{ago, print_json, trim_lines};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header);
    t
}

fn print_table(t: &Table) {
    println!("{}", trim_lines(&t.to_string()));
}

/// `sandpit whoami`.
pub async fn whoami(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let me = client.me().await?;
    if json {
        print_json(&me)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("user:     {} ({})", me.user.name, me.user.role);
    println!("kyc:      {}", me.user.kyc);
    let projects: Vec<String> = me.projects.iter().map(|m| format!("{} ({})", m.project, m.role)).collect();
    println!("projects: {}", if projects.is_empty() { "-".to_string() } else { projects.join(", ") });
    let scope = me
        .key
        .project
        .as_deref()
        .map_or_else(|| "all of the user's projects".to_string(), |p| format!("project {p} only"));
    println!("key:      {} ({}…, {scope})", me.key.name, me.key.prefix);
    Ok(ExitCode::SUCCESS)
}

/// `sandpit user …`.
pub async fn user(client: &Client, c: &UserCommand, json: bool) -> anyhow::Result<ExitCode> {
    match c {
        UserCommand::Ls => {
            let users = client.users().await?;
            if json {
                print_json(&users)?;
            } else {
                let now = OffsetDateTime::now_utc();
                let mut t = table(&["NAME", "ROLE", "KYC", "CREATED"]);
                for u in &users {
                    t.add_row([u.name.clone(), u.role.clone(), u.kyc.clone(), ago(u.created_at, now)]);
                }
                print_table(&t);
            }
        }
        UserCommand::Create(a) => {
            let req = CreateUser { name: a.name.clone(), role: a.admin.then(|| "admin".to_string()) };
            let created = client.create_user(&req).await?;
            if json {
                print_json(&created)?;
            } else {
                println!(
                    "created user {} ({}, kyc {})",
                    created.user.name, created.user.role, created.user.kyc
                );
                println!("API key (shown only now): {}", created.api_key);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit project …`.
pub async fn project(client: &Client, c: &ProjectCommand, json: bool) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match c {
        ProjectCommand::Ls => {
            let ps = client.projects().await?;
            if json {
                print_json(&ps)?;
            } else {
                let mut t = table(&["NAME", "ROLE", "CREATED"]);
                for p in &ps {
                    let role = p.role.clone().unwrap_or_else(|| "admin".to_string());
                    t.add_row([p.name.clone(), role, ago(p.created_at, now)]);
                }
                print_table(&t);
            }
        }
        ProjectCommand::Create(a) => {
            let p = client.create_project(&a.name).await?;
            if json {
                print_json(&p)?;
            } else {
                println!("created project {} (you are its owner; its wallet is empty)", p.name);
            }
        }
        ProjectCommand::Members(a) => {
            let ms = client.members(&a.name).await?;
            if json {
                print_json(&ms)?;
            } else {
                let mut t = table(&["USER", "ROLE"]);
                for m in &ms {
                    t.add_row([m.user.clone(), m.role.clone()]);
                }
                print_table(&t);
            }
        }
        ProjectCommand::AddMember(a) => {
            let role = if a.owner { "owner" } else { "member" };
            let m = client.set_member(&a.project, &a.user, role).await?;
            if json {
                print_json(&m)?;
            } else {
                println!(
                    "{} is now {} of {}",
                    m.user,
                    if m.role == "owner" { "an owner" } else { "a member" },
                    a.project
                );
            }
        }
        ProjectCommand::RemoveMember(a) => {
            client.remove_member(&a.project, &a.user).await?;
            if json {
                print_json(&serde_json::json!({"project": a.project, "user": a.user, "removed": true}))?;
            } else {
                println!("{} is no longer a member of {}", a.user, a.project);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit key …`.
pub async fn key(client: &Client, c: &KeyCommand, json: bool) -> anyhow::Result<ExitCode> {
    match c {
        KeyCommand::Ls(a) => {
            let keys = client.keys(a.all).await?;
            if json {
                print_json(&keys)?;
            } else {
                let now = OffsetDateTime::now_utc();
                let mut t = table(&["ID", "NAME", "PREFIX", "USER", "PROJECT", "CREATED", "REVOKED"]);
                for k in &keys {
                    t.add_row([
                        k.id.to_string(),
                        k.name.clone(),
                        format!("{}…", k.prefix),
                        k.user.clone(),
                        k.project.clone().unwrap_or_else(|| "-".into()),
                        ago(k.created_at, now),
                        k.revoked_at.map_or_else(|| "-".into(), |r| ago(r, now)),
                    ]);
                }
                print_table(&t);
            }
        }
        KeyCommand::Create(a) => {
            let req = CreateKey { name: a.name.clone(), project: a.project.clone(), user: a.user.clone() };
            let created = client.create_key(&req).await?;
            if json {
                print_json(&created)?;
            } else {
                let scope = created
                    .key
                    .project
                    .as_deref()
                    .map_or_else(String::new, |p| format!(", project {p} only"));
                println!(
                    "created key {} (id {}, for {}{scope})",
                    created.key.name, created.key.id, created.key.user
                );
                println!("API key (shown only now): {}", created.api_key);
            }
        }
        KeyCommand::Revoke(a) => {
            client.revoke_key(a.id).await?;
            if json {
                print_json(&serde_json::json!({"id": a.id, "revoked": true}))?;
            } else {
                println!("revoked key {}", a.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_kyc(k: &KycView, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(k);
    }
    println!("{}: {}", k.user, k.status);
    if let Some(r) = &k.reference {
        println!("reference: {r}");
    }
    if let Some(u) = &k.verification_url {
        println!("complete it at: {u}");
    }
    Ok(())
}

/// `sandpit kyc …`.
pub async fn kyc(client: &Client, c: &KycCommand, json: bool) -> anyhow::Result<ExitCode> {
    let k = match c {
        KycCommand::Status => client.kyc().await?,
        KycCommand::Start => client.start_kyc().await?,
        KycCommand::Set(a) => client.set_kyc(&a.user, &a.status).await?,
    };
    print_kyc(&k, json)?;
    Ok(ExitCode::SUCCESS)
}

/// The project named, or the caller's only one.
async fn project_or_only(client: &Client, project: Option<&String>) -> anyhow::Result<String> {
    if let Some(p) = project {
        return Ok(p.clone());
    }
    let projects = client.projects().await?;
    match projects.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => anyhow::bail!("the key sees no project"),
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!("name the project: the key sees {}", names.join(", "))
        }
    }
}

/// `sandpit wallet …`.
pub async fn wallet(client: &Client, c: &WalletCommand, json: bool) -> anyhow::Result<ExitCode> {
    let w = match c {
        WalletCommand::Show(a) => {
            let project = project_or_only(client, a.project.as_ref()).await?;
            client.wallet(&project).await?
        }
        WalletCommand::Credit(a) => {
            let req = CreditWallet { amount: a.amount.clone(), note: a.note.clone() };
            client.credit_wallet(&a.project, &req).await?
        }
        WalletCommand::SetLow(a) => client.set_low_threshold(&a.project, &a.amount).await?,
        WalletCommand::Ledger(a) => {
            let project = project_or_only(client, a.project.as_ref()).await?;
            let lines =
                client.ledger(&project, &LedgerPage { after_id: a.after, limit: Some(a.limit) }).await?;
            if json {
                print_json(&lines)?;
            } else {
                let mut t = table(&["ID", "AT", "KIND", "AMOUNT", "SANDBOX", "RESOURCE", "SECONDS", "NOTE"]);
                for l in &lines {
                    let at = l.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                    t.add_row([
                        l.id.to_string(),
                        at,
                        l.kind.clone(),
                        l.amount.clone(),
                        l.sandbox.clone().unwrap_or_else(|| "-".into()),
                        l.resource.clone().unwrap_or_else(|| "-".into()),
                        l.seconds.map_or_else(|| "-".into(), |s| s.to_string()),
                        l.note.clone().unwrap_or_default(),
                    ]);
                }
                print_table(&t);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if json {
        print_json(&w)?;
    } else {
        println!("project:        {}", w.project);
        println!("balance:        {} {}{}", w.balance, w.currency, if w.low { " (low)" } else { "" });
        println!("low under:      {} {}", w.low_threshold, w.currency);
        println!("burn per hour:  {} {}", w.burn_per_hour, w.currency);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandpit estimate`.
pub async fn estimate(client: &Client, a: &EstimateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let req = EstimateRequest { cpu: a.cpu, memory: a.memory, gpu: a.gpu.clone() };
    let e = client.estimate(&req).await?;
    if json {
        print_json(&e)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &e.currency;
    let gpu = e.gpu_model.as_deref().map_or_else(String::new, |m| format!(" ({m})"));
    println!("gpu:      {} {c}/h{gpu}", e.gpu_per_hour);
    println!("cpu:      {} {c}/h", e.cpu_per_hour);
    println!("memory:   {} {c}/h", e.memory_per_hour);
    println!("running:  {} {c}/h", e.running_per_hour);
    println!("paused:   {} {c}/h", e.paused_per_hour);
    Ok(ExitCode::SUCCESS)
}

/// `sandpit usage`.
pub async fn usage(client: &Client, a: &UsageArgs, json: bool) -> anyhow::Result<ExitCode> {
    let q = UsageQuery { from: a.from.clone(), to: a.to.clone(), project: a.project.clone(), format: None };
    if a.csv {
        print!("{}", client.usage_csv(&q).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let u = client.usage(&q).await?;
    if json {
        print_json(&u)?;
        return Ok(ExitCode::SUCCESS);
    }
    let fmt =
        |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    println!("{} to {}: {} {}", fmt(u.from), fmt(u.to), u.total, u.currency);
    let section = |title: &str, rows: Vec<(String, String)>| {
        println!("\nby {title}:");
        let mut t = table(&[&title.to_uppercase(), "AMOUNT"]);
        for (k, v) in rows {
            t.add_row([k, v]);
        }
        print_table(&t);
    };
    section("resource", u.by_resource.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    section("project", u.by_project.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    section(
        "sandbox",
        u.by_sandbox
            .iter()
            .map(|s| {
                let name =
                    s.name.as_ref().map_or_else(|| s.sandbox.to_string(), |n| format!("{n} ({})", s.sandbox));
                (format!("{name} [{}]", s.project), s.amount.clone())
            })
            .collect(),
    );
    section("day", u.by_day.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    Ok(ExitCode::SUCCESS)
}
