//! DynamoDB lease table for kcl-rs.
//!
//! This crate will hold `DynamoLeaseStore`, the production implementation of kcl-core's `LeaseStore`
//! trait over `aws-sdk-dynamodb`. It reads and writes the Java KCL 2.x/3.x lease item schema
//! attribute for attribute, so a Java fleet's lease table can be taken over without losing
//! checkpoints. It is built in the AWS-backends work item; until then the crate is intentionally
//! empty and exports nothing.
