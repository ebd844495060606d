//! `DynamoLeaseStore`: the `LeaseStore` contract as DynamoDB conditional writes.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use kcl_core::lease::{
    CheckpointUpdate, Lease, LeaseError, LeaseListing, LeaseStore, StoreCapabilities,
};
use kcl_core::model::{ExtendedSequenceNumber, ShardId};
use tracing::{debug, warn};

use crate::error::{backend_msg, is_conditional_failure, map_sdk};
use crate::item::{Item, attr, checkpoint_attrs, from_item, n, s, string_set, to_item};
use crate::table::{LeaseTable, TableOptions};

/// A lease table in DynamoDB, in the Java KCL's item schema.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// Whether rows of other entity types were reported (once per store, at debug level).
    other_entities_seen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// An update expression being built: `SET`/`REMOVE` clauses, a condition, and placeholders.
#[derive(Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    /// `ADD` / `DELETE` clauses (set elements).
    add: Vec<String>,
    delete: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.set.push(format!("{n} = {v}"));
        self
    }

    fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.remove.push(n);
        self
    }

    fn add(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.add.push(format!("{n} {v}"));
        self
    }

    fn delete(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.delete.push(format!("{n} {v}"));
        self
    }

    /// The caller's renewal stamp, when it brings one.
    fn stamp(&mut self, expected: &Lease) -> &mut Self {
        if let Some(r) = &expected.renewed_at {
            self.set(attr::RENEWED_AT, s(r.to_string()));
        }
        self
    }

    fn require_eq(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.conditions.push(format!("{n} = {v}"));
        self
    }

    fn require_absent(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.conditions.push(format!("attribute_not_exists({n})"));
        self
    }

    /// The caller's view: same counter and same owner (or still unowned).
    fn require_held(&mut self, expected: &Lease) -> &mut Self {
        self.require_eq(attr::LEASE_COUNTER, n(expected.counter));
        match &expected.owner {
            Some(o) => self.require_eq(attr::LEASE_OWNER, s(o)),
            None => self.require_absent(attr::LEASE_OWNER),
        }
    }

    fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.delete.is_empty() {
            parts.push(format!("DELETE {}", self.delete.join(", ")));
        }
        parts.join(" ")
    }

    fn condition(&mut self) -> String {
        // Every conditional write needs the item: UpdateItem would otherwise create it.
        let key = self.name(attr::LEASE_KEY);
        let mut all = vec![format!("attribute_exists({key})")];
        all.append(&mut self.conditions);
        all.join(" AND ")
    }
}

fn commit(u: &mut Update, c: &ExtendedSequenceNumber) {
    let (value, sub) = checkpoint_attrs(c);
    u.set(attr::CHECKPOINT, value)
        .set(attr::CHECKPOINT_SUB, sub)
        .set(attr::OWNER_SWITCHES, n(0));
    u.remove(attr::PENDING)
        .remove(attr::PENDING_SUB)
        .remove(attr::PENDING_STATE);
}

impl DynamoLeaseStore {
    /// A store on `table` using `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            other_entities_seen: Default::default(),
        }
    }

    /// A store on `table` with a client for `config` (region, endpoint, credentials).
    pub fn from_config(config: &aws_types::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Administration of this store's table (create, describe, upgrade).
    pub fn admin(&self) -> LeaseTable {
        LeaseTable::new(self.client.clone(), self.table.clone())
    }

    /// [`LeaseTable::create_table_if_missing`] on this store's table.
    pub async fn create_table_if_missing(&self, options: &TableOptions) -> Result<(), LeaseError> {
        self.admin().create_table_if_missing(options).await
    }

    /// [`LeaseTable::describe_table`] on this store's table.
    pub async fn describe_table(&self) -> Result<Option<crate::TableDescription>, LeaseError> {
        self.admin().describe_table().await
    }

    /// [`LeaseTable::apply_change`] on this store's table.
    pub async fn apply_change(&self, change: &crate::TableChange) -> Result<(), LeaseError> {
        self.admin().apply_change(change).await
    }

    /// Every lease, by a paged Scan (strongly consistent or not).
    async fn scan(&self, consistent: bool) -> Result<LeaseListing, LeaseError> {
        let mut listing = LeaseListing::default();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| map_sdk(&self.table, &self.table, e))?;
            for item in out.items() {
                if crate::item::is_other_entity(item) {
                    listing.other_entities += 1;
                    continue;
                }
                match from_item(item) {
                    Ok(lease) => listing.leases.push(lease),
                    Err(e) => {
                        warn!(table = %self.table, error = %kcl_core::error::Report(&e), "skipping a lease item that does not parse");
                        listing.malformed.push(e);
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        if listing.other_entities > 0
            && !self
                .other_entities_seen
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            debug!(table = %self.table, rows = listing.other_entities, "skipping rows that are not leases (KCL 3.x entityType)");
        }
        listing.leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    /// Classifies a failed condition on `key`: the lease changed (`ConditionFailed`) or is gone
    /// (`NotFound`). DynamoDB returns the old item on a failed condition
    /// (`ReturnValuesOnConditionCheckFailure = ALL_OLD`) exactly when there is one; some
    /// DynamoDB-compatible services never return it, so without it one strongly consistent read
    /// tells. A failed read answers `ConditionFailed`: nothing was written either way, and both
    /// make the caller re-read the lease.
    async fn condition_failure(&self, key: &str, old_item_returned: bool) -> LeaseError {
        if old_item_returned {
            return LeaseError::ConditionFailed {
                key: key.to_string(),
            };
        }
        match self.get(key).await {
            Ok(None) => LeaseError::NotFound {
                key: key.to_string(),
            },
            Ok(Some(_)) => LeaseError::ConditionFailed {
                key: key.to_string(),
            },
            Err(e) => {
                debug!(table = %self.table, lease_key = %key, error = %kcl_core::error::Report(&e), "could not read a lease after a failed condition");
                LeaseError::ConditionFailed {
                    key: key.to_string(),
                }
            }
        }
    }

    /// Runs a conditional update and returns the stored lease after it.
    async fn update(&self, key: &str, mut u: Update) -> Result<Lease, LeaseError> {
        let condition = u.condition();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(key))
            .update_expression(u.expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(u.names))
            .set_expression_attribute_values((!u.values.is_empty()).then_some(u.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => from_item(
                out.attributes()
                    .ok_or_else(|| backend_msg(key, "UpdateItem returned no attributes"))?,
            ),
            Err(e) => {
                let old = match &e {
                    SdkError::ServiceError(se) => match se.err() {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                            Some(c.item().is_some_and(|i| !i.is_empty()))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                Err(match old {
                    Some(returned) => self.condition_failure(key, returned).await,
                    None => map_sdk(&self.table, key, e),
                })
            }
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::all()
    }

    /// [`create_table_if_missing`](Self::create_table_if_missing) with the owner index.
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.create_table_if_missing(&TableOptions {
            lease_owner_index: true,
            ..TableOptions::default()
        })
        .await
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<(), LeaseError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(lease)))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::LEASE_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(LeaseError::ConditionFailed {
                key: lease.key.clone(),
            }),
            Err(e) => Err(map_sdk(&self.table, &lease.key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(&self.table, key, e))?;
        out.item().map(from_item).transpose()
    }

    async fn list(&self) -> Result<LeaseListing, LeaseError> {
        self.scan(true).await
    }

    async fn list_eventually(&self) -> Result<LeaseListing, LeaseError> {
        self.scan(false).await
    }

    async fn renew(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        let mut u = Update::default();
        u.require_held(expected)
            .set(attr::LEASE_COUNTER, n(expected.counter + 1));
        if let Some(t) = expected.throughput_kbps {
            u.set(attr::THROUGHPUT, n(t));
        }
        u.stamp(expected);
        if !expected.inbox.is_empty() {
            u.delete(attr::INBOX, AttributeValue::Ss(expected.inbox.clone()));
        }
        self.update(&expected.key, u).await
    }

    async fn take(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        let switch = u64::from(expected.owner.as_deref() != Some(new_owner));
        let mut u = Update::default();
        u.require_eq(attr::LEASE_COUNTER, n(expected.counter))
            .set(attr::LEASE_OWNER, s(new_owner))
            .set(attr::LEASE_COUNTER, n(expected.counter + 1))
            .set(
                attr::OWNER_SWITCHES,
                n(expected.owner_switches_since_checkpoint + switch),
            )
            .remove(attr::CHECKPOINT_OWNER)
            .stamp(expected);
        self.update(&expected.key, u).await
    }

    async fn hand_off(&self, expected: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        let Some(current) = &expected.owner else {
            return Err(LeaseError::ConditionFailed {
                key: expected.key.clone(),
            });
        };
        let mut u = Update::default();
        u.require_held(expected)
            .require_absent(attr::CHECKPOINT_OWNER)
            .set(attr::LEASE_OWNER, s(new_owner))
            .set(attr::CHECKPOINT_OWNER, s(current))
            .set(attr::LEASE_COUNTER, n(expected.counter + 1))
            .stamp(expected)
            .set(
                attr::OWNER_SWITCHES,
                n(expected.owner_switches_since_checkpoint + 1),
            );
        self.update(&expected.key, u).await
    }

    async fn finish_hand_off(
        &self,
        key: &str,
        previous_owner: &str,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Result<Lease, LeaseError> {
        let mut u = Update::default();
        u.require_eq(attr::CHECKPOINT_OWNER, s(previous_owner))
            .remove(attr::CHECKPOINT_OWNER);
        if let Some(c) = &checkpoint {
            commit(&mut u, c);
        }
        self.update(key, u).await
    }

    async fn evict(&self, expected: &Lease) -> Result<Lease, LeaseError> {
        let mut u = Update::default();
        u.require_held(expected)
            .set(attr::LEASE_COUNTER, n(expected.counter + 1))
            .remove(attr::LEASE_OWNER)
            .remove(attr::CHECKPOINT_OWNER);
        self.update(&expected.key, u).await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        update: CheckpointUpdate,
    ) -> Result<Lease, LeaseError> {
        let mut u = Update::default();
        u.require_held(expected)
            .set(attr::LEASE_COUNTER, n(expected.counter + 1))
            .stamp(expected);
        match &update {
            CheckpointUpdate::Commit(c) => commit(&mut u, c),
            CheckpointUpdate::Prepare { pending, state } => {
                let (value, sub) = checkpoint_attrs(pending);
                u.set(attr::PENDING, value).set(attr::PENDING_SUB, sub);
                match state {
                    Some(st) => u.set(
                        attr::PENDING_STATE,
                        AttributeValue::B(Blob::new(st.to_vec())),
                    ),
                    None => u.remove(attr::PENDING_STATE),
                };
            }
        }
        self.update(&expected.key, u).await
    }

    async fn set_child_shards(&self, key: &str, children: &[ShardId]) -> Result<Lease, LeaseError> {
        let mut u = Update::default();
        if children.is_empty() {
            u.remove(attr::CHILDREN);
        } else {
            u.set(attr::CHILDREN, string_set(children));
        }
        self.update(key, u).await
    }

    async fn post(&self, key: &str, owner: &str, entries: &[String]) -> Result<(), LeaseError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut u = Update::default();
        u.require_eq(attr::LEASE_OWNER, s(owner))
            .add(attr::INBOX, AttributeValue::Ss(entries.to_vec()));
        self.update(key, u).await.map(|_| ())
    }

    async fn delete(&self, expected: &Lease) -> Result<(), LeaseError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, s(&expected.key))
            .condition_expression("attribute_exists(#k) AND #c = :c")
            .expression_attribute_names("#k", attr::LEASE_KEY)
            .expression_attribute_names("#c", attr::LEASE_COUNTER)
            .expression_attribute_values(":c", n(expected.counter))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) => match se.err() {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                    let returned = c.item().is_some_and(|i| !i.is_empty());
                    Err(self.condition_failure(&expected.key, returned).await)
                }
                _ => Err(map_sdk(&self.table, &expected.key, SdkError::ServiceError(se))),
            },
            Err(e) => Err(map_sdk(&self.table, &expected.key, e)),
        }
    }
}
