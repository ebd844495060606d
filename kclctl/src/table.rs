//! `kclctl table show | create | upgrade`: the lease table itself.
//!
//! Both create and upgrade include the owner index (kcl-rs and the KCL 3.x query it); upgrade
//! only adds (see `kcl_dynamo_leases::TableDescription::upgrade_to`) and is a dry run unless
//! `--apply`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kcl_dynamo_leases::{Billing, LeaseTable, TableChange, TableDescription, TableOptions};
use serde::Serialize;

use crate::Conn;
use crate::view::Output;

/// `kclctl table ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TableCommand {
    /// The table's status, billing, index, backups, protection and tags.
    Show {
        /// Application name.
        app: String,
    },
    /// Create the table (with the owner index) unless it exists.
    Create {
        /// Application name.
        app: String,
        #[command(flatten)]
        options: OptionArgs,
    },
    /// Add what an existing table lacks: the owner index and the options given (dry run
    /// unless --apply).
    Upgrade {
        /// Application name.
        app: String,
        #[command(flatten)]
        options: OptionArgs,
        /// Make the changes (default: only show them).
        #[arg(long)]
        apply: bool,
    },
}

/// Table options shared by create and upgrade.
#[derive(Debug, Args)]
pub(crate) struct OptionArgs {
    /// Pay per request (the default for a new table).
    #[arg(long, conflicts_with = "provisioned")]
    on_demand: bool,
    /// Provisioned capacity as READ,WRITE units (the owner index gets the same).
    #[arg(long, value_name = "READ,WRITE")]
    provisioned: Option<String>,
    /// Turn on point-in-time recovery.
    #[arg(long)]
    pitr: bool,
    /// Turn on deletion protection.
    #[arg(long)]
    deletion_protection: bool,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
}

impl OptionArgs {
    fn options(&self) -> Result<TableOptions> {
        let billing = match (&self.provisioned, self.on_demand) {
            (Some(p), _) => {
                let (r, w) = p
                    .split_once(',')
                    .with_context(|| format!("--provisioned takes READ,WRITE, not {p:?}"))?;
                let units = |s: &str| -> Result<i64> {
                    let n: i64 = s
                        .trim()
                        .parse()
                        .with_context(|| format!("capacity units {s:?}"))?;
                    if n < 1 {
                        bail!("capacity units must be at least 1, not {n}");
                    }
                    Ok(n)
                };
                Some(Billing::Provisioned {
                    read: units(r)?,
                    write: units(w)?,
                })
            }
            (None, true) => Some(Billing::OnDemand),
            (None, false) => None,
        };
        let mut tags = BTreeMap::new();
        for t in &self.tags {
            match t.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    tags.insert(k.to_string(), v.to_string());
                }
                _ => bail!("--tag takes KEY=VALUE, not {t:?}"),
            }
        }
        Ok(TableOptions::default()
            .with_lease_owner_index(true)
            .with_billing(billing)
            .with_point_in_time_recovery(self.pitr)
            .with_deletion_protection(self.deletion_protection)
            .with_tags(tags))
    }
}

/// A table description as printed in JSON.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    table: &'a str,
    arn: &'a str,
    status: &'a str,
    item_count: i64,
    billing: String,
    lease_owner_index: Option<&'a str>,
    point_in_time_recovery: bool,
    deletion_protection: bool,
    tags: &'a BTreeMap<String, String>,
}

fn shown(d: &TableDescription) -> Shown<'_> {
    Shown {
        table: &d.name,
        arn: &d.arn,
        status: &d.status,
        item_count: d.item_count,
        billing: d.billing.to_string(),
        lease_owner_index: d.lease_owner_index.as_deref(),
        point_in_time_recovery: d.point_in_time_recovery,
        deletion_protection: d.deletion_protection,
        tags: &d.tags,
    }
}

fn print(d: &TableDescription) {
    let on = |b: bool| if b { "on" } else { "off" };
    let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("table                   {} ({})", d.name, d.status);
    println!("items                   {} (approximate)", d.item_count);
    println!("billing                 {}", d.billing);
    println!(
        "owner index             {}",
        d.lease_owner_index.as_deref().map_or_else(
            || "missing (kclctl table upgrade adds it)".to_string(),
            |s| format!("{} ({s})", kcl_dynamo_leases::LEASE_OWNER_INDEX)
        )
    );
    println!("point-in-time recovery  {}", on(d.point_in_time_recovery));
    println!("deletion protection     {}", on(d.deletion_protection));
    println!(
        "tags                    {}",
        if tags.is_empty() {
            "none".to_string()
        } else {
            tags.join(", ")
        }
    );
}

async fn describe(store: &LeaseTable) -> Result<TableDescription> {
    store
        .describe_table()
        .await
        .with_context(|| format!("describing table {}", store.name()))?
        .with_context(|| format!("lease table {} does not exist", store.name()))
}

/// Runs a `kclctl table` command.
pub(crate) async fn run(conn: &Conn, command: &TableCommand, out: Output) -> Result<()> {
    match command {
        TableCommand::Show { app } => {
            let d = describe(&conn.table_admin(app).await).await?;
            if out.json {
                out.json(&shown(&d));
            } else {
                print(&d);
            }
        }
        TableCommand::Create { app, options } => {
            let store = conn.table_admin(app).await;
            let options = options.options()?;
            let existed = store
                .describe_table()
                .await
                .with_context(|| format!("describing table {}", store.name()))?
                .is_some();
            if existed {
                bail!(
                    "lease table {} exists already (kclctl table upgrade changes it)",
                    store.name()
                );
            }
            store
                .create_table_if_missing(&options)
                .await
                .with_context(|| format!("creating table {}", store.name()))?;
            let d = describe(&store).await?;
            if out.json {
                out.json(&shown(&d));
            } else {
                println!("created lease table {}", d.name);
                print(&d);
            }
        }
        TableCommand::Upgrade {
            app,
            options,
            apply,
        } => {
            let store = conn.table_admin(app).await;
            let changes = describe(&store).await?.upgrade_to(&options.options()?);
            if changes.is_empty() && !out.json {
                println!("table {} already has everything asked", store.name());
            } else if *apply {
                for c in &changes {
                    store
                        .apply_change(c)
                        .await
                        .with_context(|| format!("upgrading {}: {c}", store.name()))?;
                    if !out.json {
                        println!("done: {c}");
                    }
                }
            } else if !out.json {
                println!("dry run (nothing written; --apply makes these changes):");
                for c in &changes {
                    println!("  would {c}");
                }
            }
            if out.json {
                let list: Vec<String> = changes.iter().map(TableChange::to_string).collect();
                out.json(&serde_json::json!({
                    "table": store.name(),
                    "changes": list,
                    "applied": apply,
                }));
            }
        }
    }
    Ok(())
}
