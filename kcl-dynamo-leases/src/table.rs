//! The lease table itself: create it, describe it, and bring an existing one up to the options
//! an operator wants (owner index, billing, point-in-time recovery, deletion protection, tags).
//!
//! An upgrade only adds: it never drops an index, turns protection or backups off, or removes a
//! tag — those are decisions to make in the console with eyes open. Each change is its own
//! `UpdateTable`/`UpdateContinuousBackups`/`TagResource` call followed by a wait until the table
//! (and a new index) is ACTIVE, because DynamoDB refuses several kinds of change in one call.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, Projection, ProjectionType,
    ProvisionedThroughput, ScalarAttributeType, TableStatus, Tag,
};
use kcl_core::lease::LeaseError;
use tracing::info;

use crate::error::{backend, map_sdk};
use crate::item::attr;

/// Name of the optional index from owner to lease keys (the KCL 3.x name).
pub const LEASE_OWNER_INDEX: &str = "LeaseOwnerToLeaseKeyIndex";

/// How long a table or a new index may take to become ACTIVE.
const ACTIVE_WITHIN: Duration = Duration::from_secs(600);

/// How the table is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Pay per request (the default for new tables, as the KCL's).
    OnDemand,
    /// Provisioned capacity (the owner index gets the same).
    Provisioned {
        /// Read capacity units.
        read: i64,
        /// Write capacity units.
        write: i64,
    },
}

impl fmt::Display for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Billing::OnDemand => write!(f, "on-demand"),
            Billing::Provisioned { read, write } => {
                write!(f, "provisioned ({read} read, {write} write units)")
            }
        }
    }
}

/// What a lease table should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableOptions {
    /// The `LeaseOwnerToLeaseKeyIndex` GSI (hash `leaseOwner`, range `leaseKey`, keys only).
    pub lease_owner_index: bool,
    /// Billing: `None` is on-demand for a new table and "leave as is" for an upgrade.
    pub billing: Option<Billing>,
    /// Point-in-time recovery (continuous backups).
    pub point_in_time_recovery: bool,
    /// Deletion protection.
    pub deletion_protection: bool,
    /// Tags to set (existing tags with other keys stay).
    pub tags: BTreeMap<String, String>,
}

impl TableOptions {
    /// Sets [`lease_owner_index`](Self::lease_owner_index).
    pub fn with_lease_owner_index(mut self, lease_owner_index: bool) -> Self {
        self.lease_owner_index = lease_owner_index;
        self
    }

    /// Sets [`billing`](Self::billing).
    pub fn with_billing(mut self, billing: Option<Billing>) -> Self {
        self.billing = billing;
        self
    }

    /// Sets [`point_in_time_recovery`](Self::point_in_time_recovery).
    pub fn with_point_in_time_recovery(mut self, point_in_time_recovery: bool) -> Self {
        self.point_in_time_recovery = point_in_time_recovery;
        self
    }

    /// Sets [`deletion_protection`](Self::deletion_protection).
    pub fn with_deletion_protection(mut self, deletion_protection: bool) -> Self {
        self.deletion_protection = deletion_protection;
        self
    }

    /// Sets [`tags`](Self::tags).
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }
}

/// A lease table as DynamoDB describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDescription {
    /// Table name.
    pub name: String,
    /// Table ARN.
    pub arn: String,
    /// Table status (`ACTIVE`, `UPDATING`, ...).
    pub status: String,
    /// Approximate item count (DynamoDB refreshes it about every six hours).
    pub item_count: i64,
    /// Billing.
    pub billing: Billing,
    /// The owner index's status, if the index exists.
    pub lease_owner_index: Option<String>,
    /// Point-in-time recovery enabled.
    pub point_in_time_recovery: bool,
    /// Deletion protection enabled.
    pub deletion_protection: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// One change an upgrade makes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableChange {
    /// Create the owner index.
    CreateLeaseOwnerIndex,
    /// Switch billing.
    SetBilling(Billing),
    /// Turn point-in-time recovery on.
    EnablePointInTimeRecovery,
    /// Turn deletion protection on.
    EnableDeletionProtection,
    /// Set these tags.
    Tag(BTreeMap<String, String>),
}

impl fmt::Display for TableChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableChange::CreateLeaseOwnerIndex => write!(f, "create index {LEASE_OWNER_INDEX}"),
            TableChange::SetBilling(b) => write!(f, "switch billing to {b}"),
            TableChange::EnablePointInTimeRecovery => write!(f, "enable point-in-time recovery"),
            TableChange::EnableDeletionProtection => write!(f, "enable deletion protection"),
            TableChange::Tag(tags) => {
                let list: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "tag {}", list.join(", "))
            }
        }
    }
}

impl TableDescription {
    /// The changes that bring this table to `wanted` (only additions; see the module docs).
    pub fn upgrade_to(&self, wanted: &TableOptions) -> Vec<TableChange> {
        let mut changes = Vec::new();
        if let Some(b) = wanted.billing
            && b != self.billing
        {
            changes.push(TableChange::SetBilling(b));
        }
        if wanted.lease_owner_index && self.lease_owner_index.is_none() {
            changes.push(TableChange::CreateLeaseOwnerIndex);
        }
        if wanted.point_in_time_recovery && !self.point_in_time_recovery {
            changes.push(TableChange::EnablePointInTimeRecovery);
        }
        if wanted.deletion_protection && !self.deletion_protection {
            changes.push(TableChange::EnableDeletionProtection);
        }
        let tags: BTreeMap<String, String> = wanted
            .tags
            .iter()
            .filter(|(k, v)| self.tags.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !tags.is_empty() {
            changes.push(TableChange::Tag(tags));
        }
        changes
    }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, LeaseError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(backend)
}

fn string_attr(name: &str) -> Result<AttributeDefinition, LeaseError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(backend)
}

fn throughput(billing: Billing) -> Result<Option<ProvisionedThroughput>, LeaseError> {
    match billing {
        Billing::OnDemand => Ok(None),
        Billing::Provisioned { read, write } => ProvisionedThroughput::builder()
            .read_capacity_units(read)
            .write_capacity_units(write)
            .build()
            .map(Some)
            .map_err(backend),
    }
}

fn billing_mode(billing: Billing) -> BillingMode {
    match billing {
        Billing::OnDemand => BillingMode::PayPerRequest,
        Billing::Provisioned { .. } => BillingMode::Provisioned,
    }
}

fn owner_index_keys() -> Result<Vec<KeySchemaElement>, LeaseError> {
    Ok(vec![
        key(attr::LEASE_OWNER, KeyType::Hash)?,
        key(attr::LEASE_KEY, KeyType::Range)?,
    ])
}

fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

/// Administration of one lease table: create it, describe it, upgrade it. Used by the store
/// (`ensure_table`) and by the operations CLI; it needs only the table's name and a client.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl LeaseTable {
    /// Administration of `table` through `client`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Creates the table unless it exists (an existing table is left as it is), waits until it
    /// is ACTIVE, and turns on point-in-time recovery if asked.
    pub async fn create_table_if_missing(&self, options: &TableOptions) -> Result<(), LeaseError> {
        let billing = options.billing.unwrap_or(Billing::OnDemand);
        let mut create = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(billing_mode(billing))
            .set_provisioned_throughput(throughput(billing)?)
            .key_schema(key(attr::LEASE_KEY, KeyType::Hash)?)
            .attribute_definitions(string_attr(attr::LEASE_KEY)?)
            .deletion_protection_enabled(options.deletion_protection);
        for (k, v) in &options.tags {
            create = create.tags(Tag::builder().key(k).value(v).build().map_err(backend)?);
        }
        if options.lease_owner_index {
            create = create
                .attribute_definitions(string_attr(attr::LEASE_OWNER)?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(LEASE_OWNER_INDEX)
                        .set_key_schema(Some(owner_index_keys()?))
                        .projection(keys_only())
                        .set_provisioned_throughput(throughput(billing)?)
                        .build()
                        .map_err(backend)?,
                );
        }
        let created = match create.send().await {
            Ok(_) => {
                info!(table = %self.table, "lease table created");
                true
            }
            Err(e) if e.code() == Some("ResourceInUseException") => false,
            Err(e) => return Err(map_sdk(&self.table, &self.table, e)),
        };
        self.wait_active(false).await?;
        if created && options.point_in_time_recovery {
            self.apply_change(&TableChange::EnablePointInTimeRecovery)
                .await?;
        }
        Ok(())
    }

    /// The table as it is now; `None` if it does not exist.
    pub async fn describe_table(&self) -> Result<Option<TableDescription>, LeaseError> {
        let out = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(map_sdk(&self.table, &self.table, e)),
        };
        let t = out
            .table()
            .ok_or_else(|| backend("DescribeTable returned no table"))?;
        let on_demand = t
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .is_some_and(|m| *m == BillingMode::PayPerRequest);
        let billing = if on_demand {
            Billing::OnDemand
        } else {
            let p = t.provisioned_throughput();
            Billing::Provisioned {
                read: p.and_then(|p| p.read_capacity_units()).unwrap_or(0),
                write: p.and_then(|p| p.write_capacity_units()).unwrap_or(0),
            }
        };
        let lease_owner_index = t
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(LEASE_OWNER_INDEX))
            .map(|i| {
                i.index_status()
                    .map_or("UNKNOWN", |s| s.as_str())
                    .to_string()
            });
        let arn = t.table_arn().unwrap_or_default().to_string();
        let backups = self
            .client
            .describe_continuous_backups()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| map_sdk(&self.table, &self.table, e))?;
        let point_in_time_recovery = backups
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            == Some(&PointInTimeRecoveryStatus::Enabled);
        let mut tags = BTreeMap::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list_tags_of_resource()
                .resource_arn(&arn)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| map_sdk(&self.table, &self.table, e))?;
            for tag in page.tags() {
                tags.insert(tag.key().to_string(), tag.value().to_string());
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        Ok(Some(TableDescription {
            name: self.table.clone(),
            arn,
            status: t
                .table_status()
                .map_or("UNKNOWN", |s| s.as_str())
                .to_string(),
            item_count: t.item_count().unwrap_or(0),
            billing,
            lease_owner_index,
            point_in_time_recovery,
            deletion_protection: t.deletion_protection_enabled().unwrap_or(false),
            tags,
        }))
    }

    /// Applies one change of [`TableDescription::upgrade_to`] and waits until the table (and a
    /// new index) is ACTIVE.
    pub async fn apply_change(&self, change: &TableChange) -> Result<(), LeaseError> {
        let table = &self.table;
        let sdk = |e| map_sdk(table, table, e);
        match change {
            TableChange::CreateLeaseOwnerIndex => {
                // A provisioned table's index needs capacity of its own: the table's.
                let billing = self
                    .describe_table()
                    .await?
                    .map_or(Billing::OnDemand, |d| d.billing);
                let index = CreateGlobalSecondaryIndexAction::builder()
                    .index_name(LEASE_OWNER_INDEX)
                    .set_key_schema(Some(owner_index_keys()?))
                    .projection(keys_only())
                    .set_provisioned_throughput(throughput(billing)?)
                    .build()
                    .map_err(backend)?;
                self.client
                    .update_table()
                    .table_name(table)
                    .attribute_definitions(string_attr(attr::LEASE_OWNER)?)
                    .attribute_definitions(string_attr(attr::LEASE_KEY)?)
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder().create(index).build(),
                    )
                    .send()
                    .await
                    .map_err(sdk)?;
            }
            TableChange::SetBilling(b) => {
                self.client
                    .update_table()
                    .table_name(table)
                    .billing_mode(billing_mode(*b))
                    .set_provisioned_throughput(throughput(*b)?)
                    .send()
                    .await
                    .map_err(sdk)?;
            }
            TableChange::EnablePointInTimeRecovery => {
                self.client
                    .update_continuous_backups()
                    .table_name(table)
                    .point_in_time_recovery_specification(
                        PointInTimeRecoverySpecification::builder()
                            .point_in_time_recovery_enabled(true)
                            .build()
                            .map_err(backend)?,
                    )
                    .send()
                    .await
                    .map_err(|e| map_sdk(table, table, e))?;
            }
            TableChange::EnableDeletionProtection => {
                self.client
                    .update_table()
                    .table_name(table)
                    .deletion_protection_enabled(true)
                    .send()
                    .await
                    .map_err(sdk)?;
            }
            TableChange::Tag(tags) => {
                let arn = self
                    .describe_table()
                    .await?
                    .ok_or_else(|| {
                        LeaseError::table_not_found(table.clone(), "DescribeTable: no such table")
                    })?
                    .arn;
                let mut request = self.client.tag_resource().resource_arn(arn);
                for (k, v) in tags {
                    request =
                        request.tags(Tag::builder().key(k).value(v).build().map_err(backend)?);
                }
                request.send().await.map_err(|e| map_sdk(table, table, e))?;
            }
        }
        info!(table = %self.table, change = %change, "lease table changed");
        self.wait_active(matches!(change, TableChange::CreateLeaseOwnerIndex))
            .await
    }

    /// Waits until the table, and with `index` also the owner index, is ACTIVE.
    async fn wait_active(&self, index: bool) -> Result<(), LeaseError> {
        let by = tokio::time::Instant::now() + ACTIVE_WITHIN;
        loop {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| map_sdk(&self.table, &self.table, e))?;
            let t = d.table();
            let table_active = t.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let index_active = !index
                || t.is_some_and(|t| {
                    t.global_secondary_indexes().iter().any(|i| {
                        i.index_name() == Some(LEASE_OWNER_INDEX)
                            && i.index_status() == Some(&IndexStatus::Active)
                    })
                });
            if table_active && index_active {
                return Ok(());
            }
            if tokio::time::Instant::now() >= by {
                return Err(LeaseError::unavailable(format!(
                    "table {} did not become ACTIVE within {} s",
                    self.table,
                    ACTIVE_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described() -> TableDescription {
        TableDescription {
            name: "app".into(),
            arn: "arn".into(),
            status: "ACTIVE".into(),
            item_count: 0,
            billing: Billing::OnDemand,
            lease_owner_index: None,
            point_in_time_recovery: false,
            deletion_protection: false,
            tags: BTreeMap::from([("team".into(), "a".into())]),
        }
    }

    #[test]
    fn an_upgrade_lists_only_what_is_missing() {
        let d = described();
        assert!(d.upgrade_to(&TableOptions::default()).is_empty());
        let wanted = TableOptions {
            lease_owner_index: true,
            billing: Some(Billing::OnDemand),
            point_in_time_recovery: true,
            deletion_protection: true,
            tags: BTreeMap::from([("team".into(), "a".into()), ("env".into(), "prod".into())]),
        };
        assert_eq!(
            d.upgrade_to(&wanted),
            vec![
                TableChange::CreateLeaseOwnerIndex,
                TableChange::EnablePointInTimeRecovery,
                TableChange::EnableDeletionProtection,
                TableChange::Tag(BTreeMap::from([("env".into(), "prod".into())])),
            ]
        );
        let mut done = d.clone();
        done.lease_owner_index = Some("ACTIVE".into());
        done.point_in_time_recovery = true;
        done.deletion_protection = true;
        done.tags.insert("env".into(), "prod".into());
        assert!(done.upgrade_to(&wanted).is_empty(), "nothing twice");
        let provisioned = TableOptions {
            billing: Some(Billing::Provisioned { read: 5, write: 5 }),
            ..TableOptions::default()
        };
        assert_eq!(
            d.upgrade_to(&provisioned),
            vec![TableChange::SetBilling(Billing::Provisioned {
                read: 5,
                write: 5
            })]
        );
    }
}
