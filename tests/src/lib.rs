//! Cross-crate and end-to-end tests of kcl-rs.
//!
//! The tests live in `tests/tests/`. Those that need an emulator read its endpoint from the
//! environment (`KCL_KINESIS_ENDPOINT`, `KCL_DYNAMODB_ENDPOINT`), which `./scripts/test` sets after
//! starting kinesis-local and moto. Without it they fail when `CI=true`, and locally skip with a
//! loud message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::{BehaviorVersion, Region};
use kcl_core::model::Record;

/// Groups user records by partition key, keeping their order, with each record's data as text.
pub fn by_partition_key(records: &[Record]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        out.entry(r.partition_key.to_string())
            .or_default()
            .push(String::from_utf8_lossy(&r.data).into_owned());
    }
    out
}

/// The endpoint in `var`, or `None` (with a loud message) when it is not set locally. In CI
/// (`CI=true`) a missing endpoint is a failure: CI must start the emulators.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set: CI must start the emulators (run ./scripts/test)")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED: {var} is not set. Run ./scripts/test to start the emulators and run this test. ***\n"
            );
            None
        }
    }
}

/// An SDK configuration for an emulator endpoint (any credentials: requests must be signed).
pub async fn emulator_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "kcl-tests",
        ))
        .load()
        .await
}

/// An SDK configuration for an emulator's TLS endpoint, trusting exactly the CA at `ca_pem`
/// (the test tooling generates it). Certificate verification stays on.
pub async fn emulator_config_tls(endpoint: &str, ca_pem: &str) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let pem = std::fs::read(ca_pem).unwrap_or_else(|e| panic!("reading the test CA {ca_pem}: {e}"));
    let trust = TrustStore::empty().with_pem_certificate(pem);
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .expect("a TLS context"),
        )
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "kcl-tests",
        ))
        .http_client(http)
        .load()
        .await
}

/// Waits until a stream on the emulator is ACTIVE (after create, split, merge).
pub async fn wait_active(client: &aws_sdk_kinesis::Client, name: &str) {
    for _ in 0..100 {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("DescribeStreamSummary");
        if d.stream_description_summary()
            .map(|s| s.stream_status().as_str())
            == Some("ACTIVE")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("stream {name} never became ACTIVE");
}

/// Creates a stream on the emulator and waits until it is ACTIVE.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    wait_active(client, name).await;
}

/// A name no other test of this run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Logs for a test run: `KCL_TEST_LOG=debug`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KCL_TEST_LOG"))
        .with_test_writer()
        .try_init();
}

/// A fresh lease table (named `prefix` + a unique suffix) on the DynamoDB emulator at `endpoint`.
pub async fn lease_table(endpoint: &str, prefix: &str) -> kcl_dynamo_leases::DynamoLeaseStore {
    let client = aws_sdk_dynamodb::Client::new(&emulator_config(endpoint).await);
    fresh_table(client, prefix).await
}

/// A fresh lease table on the emulator whose client answers failed conditions the way some
/// DynamoDB-compatible services do: without the old item, whatever
/// `ReturnValuesOnConditionCheckFailure` asked (an SDK interceptor strips it from the
/// deserialized error before the store sees it).
pub async fn lease_table_without_old_items(
    endpoint: &str,
    prefix: &str,
) -> kcl_dynamo_leases::DynamoLeaseStore {
    let config = aws_sdk_dynamodb::config::Builder::from(&emulator_config(endpoint).await)
        .interceptor(StripOldItem)
        .build();
    fresh_table(aws_sdk_dynamodb::Client::from_conf(config), prefix).await
}

async fn fresh_table(
    client: aws_sdk_dynamodb::Client,
    prefix: &str,
) -> kcl_dynamo_leases::DynamoLeaseStore {
    let store = kcl_dynamo_leases::DynamoLeaseStore::new(client, unique(prefix));
    store
        .create_table_if_missing(&kcl_dynamo_leases::TableOptions::default())
        .await
        .expect("create the lease table");
    store
}

/// Removes the old item from `ConditionalCheckFailedException`s of UpdateItem and DeleteItem.
#[derive(Debug)]
struct StripOldItem;

impl aws_sdk_dynamodb::config::Intercept for StripOldItem {
    fn name(&self) -> &'static str {
        "StripOldItem"
    }

    fn modify_before_completion(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
        use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
        use aws_smithy_runtime_api::client::interceptors::context::Error;
        use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
        let Some(Err(e)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(op) = e.as_operation_error() else {
            return Ok(());
        };
        let stripped = |c: &ConditionalCheckFailedException| {
            ConditionalCheckFailedException::builder()
                .set_message(c.message().map(str::to_string))
                .meta(c.meta().clone())
                .build()
        };
        let replaced = if let Some(UpdateItemError::ConditionalCheckFailedException(c)) =
            op.downcast_ref::<UpdateItemError>()
        {
            Error::erase(UpdateItemError::ConditionalCheckFailedException(stripped(
                c,
            )))
        } else if let Some(DeleteItemError::ConditionalCheckFailedException(c)) =
            op.downcast_ref::<DeleteItemError>()
        {
            Error::erase(DeleteItemError::ConditionalCheckFailedException(stripped(
                c,
            )))
        } else {
            return Ok(());
        };
        *e = OrchestratorError::operation(replaced);
        Ok(())
    }
}

/// `GET path` on a local HTTP/1.0 server (the worker's health and metrics endpoints): status code
/// and body, or `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// Creates a table keyed by `id` (a string) on the DynamoDB emulator, on demand, with a stream of
/// `view` when given; returns the stream's ARN (`None` without a stream).
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    view: Option<aws_sdk_dynamodb::types::StreamViewType>,
) -> Option<String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification,
    };
    let stream = view.map(|v| {
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(v)
            .build()
            .expect("a stream specification")
    });
    let out = client
        .create_table()
        .table_name(name)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("a key schema"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute definition"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(stream)
        .send()
        .await
        .expect("CreateTable");
    out.table_description()
        .and_then(|d| d.latest_stream_arn())
        .map(str::to_string)
}

/// Writes change number `version` of item `id`: a put carrying `version` (an insert, or an
/// update of an existing item), and every fifth change (`version % 5 == 4`) a delete.
pub async fn write_change(client: &aws_sdk_dynamodb::Client, table: &str, id: &str, version: u64) {
    use aws_sdk_dynamodb::types::AttributeValue;
    if version % 5 == 4 {
        client
            .delete_item()
            .table_name(table)
            .key("id", AttributeValue::S(id.into()))
            .send()
            .await
            .expect("DeleteItem");
    } else {
        client
            .put_item()
            .table_name(table)
            .item("id", AttributeValue::S(id.into()))
            .item("version", AttributeValue::N(version.to_string()))
            .item("tags", AttributeValue::Ss(vec!["a".into(), "b".into()]))
            .item("ok", AttributeValue::Bool(true))
            .send()
            .await
            .expect("PutItem");
    }
}

/// What [`write_change`] wrote as change `version`, as `EVENT:version` (`REMOVE:-` for a delete):
/// an insert after a delete (or first), else an update.
pub fn expected_change(version: u64) -> String {
    match version % 5 {
        0 => format!("INSERT:{version}"),
        4 => "REMOVE:-".to_string(),
        _ => format!("MODIFY:{version}"),
    }
}

/// A lease item as the Java DynamoDB Streams Kinesis Adapter 2.x (KCL 3.x) writes it: the
/// adapter's `[0, 1]` hash range, `parentShardId` when given, and in multi-stream mode
/// `streamName` and `shardId` (`multi`: the stream name `account:stream:1` and the shard id).
pub fn adapter_lease_item(
    key: &str,
    checkpoint: &str,
    owner: Option<&str>,
    parent: Option<&str>,
    multi: Option<(&str, &str)>,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let s = |v: &str| AttributeValue::S(v.to_string());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let mut item = std::collections::HashMap::from([
        ("leaseKey".to_string(), s(key)),
        ("leaseCounter".to_string(), n(57)),
        ("checkpoint".to_string(), s(checkpoint)),
        ("checkpointSubSequenceNumber".to_string(), n(0)),
        ("ownerSwitchesSinceCheckpoint".to_string(), n(0)),
        ("startingHashKey".to_string(), s("0")),
        ("endingHashKey".to_string(), s("1")),
    ]);
    if let Some(owner) = owner {
        item.insert("leaseOwner".into(), s(owner));
    }
    if let Some(p) = parent {
        item.insert(
            "parentShardId".into(),
            AttributeValue::Ss(vec![p.to_string()]),
        );
    }
    if let Some((stream_name, shard_id)) = multi {
        item.insert("streamName".into(), s(stream_name));
        item.insert("shardId".into(), s(shard_id));
    }
    item
}
