//! The AWS side: the SDK client (standard credential chain, rustls with ring, no SDK retries:
//! the shipper retries), the stream's name (`{hostname}`, `{instance_id}` from
//! `EGRET_INSTANCE_ID` or IMDSv2 on EC2), and the calls behind [`Destination`] with their
//! failures sorted into what the shipper does next.

use std::time::Duration;

use aws_config::imds;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
use aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::config::{self, SharedHttpClient};
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::batch::LogEvent;
use super::ship::{Destination, Failure, Rejected};
use crate::config::CloudWatchConfig;

/// The environment variable that names the instance in the stream name.
pub(super) const INSTANCE_ID_ENV: &str = "EGRET_INSTANCE_ID";

/// How long one connection attempt to CloudWatch Logs may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the instance metadata service may take to answer, per step.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Error codes that mean "slow down" or "try again later".
const TRANSIENT_CODES: [&str; 10] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailableException",
    "LimitExceededException",
    "OperationAbortedException",
    "InternalFailure",
    "ExpiredTokenException",
    "RequestExpired",
];

/// A log stream in a log group, reached through the SDK.
#[derive(Debug)]
pub(super) struct Logs {
    client: Client,
    group: String,
    stream: String,
    retention_days: u32,
}

impl Logs {
    /// Builds the client from the configuration and the standard chain, and names the stream.
    pub(super) async fn connect(config: &CloudWatchConfig) -> Result<Logs, String> {
        let http = crate::aws::http_client();
        let shared = crate::aws::load(config.region.as_deref(), http.clone()).await;
        let Some(region) = shared.region() else {
            return Err(
                "CloudWatch Logs needs a region: set [log.cloudwatch] region, \
                        AWS_REGION, or a region in the AWS profile"
                    .to_owned(),
            );
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(CALL_TIMEOUT)
            .build();
        let mut builder = config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let stream = stream_name(&config.stream, http).await;
        tracing::info!(
            "shipping access lines to CloudWatch Logs: group {}, stream {stream}, region {region}{}",
            config.group,
            config
                .endpoint
                .as_ref()
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default(),
        );
        Ok(Logs {
            client: Client::from_conf(builder.build()),
            group: config.group.clone(),
            stream,
            retention_days: config.retention_days,
        })
    }

    /// Returns the stream's name.
    pub(super) fn stream(&self) -> &str {
        &self.stream
    }
}

impl Destination for Logs {
    async fn prepare(&mut self) -> Result<(), Failure> {
        let created = self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {}
            // A group made elsewhere (CloudFormation) with a policy that cannot create one.
            Err(e) if code(&e) == Some("AccessDeniedException") => {
                tracing::debug!("no permission to create the log group {}", self.group);
            }
            Err(e) => return Err(classify(&e)),
        }
        if self.retention_days > 0 {
            let days = i32::try_from(self.retention_days).unwrap_or(i32::MAX);
            let retention = self
                .client
                .put_retention_policy()
                .log_group_name(&self.group)
                .retention_in_days(days)
                .send()
                .await;
            match retention {
                Ok(_) => {}
                Err(e) if code(&e) == Some("AccessDeniedException") => tracing::warn!(
                    "cannot set the retention of the log group {}: no permission \
                     (logs:PutRetentionPolicy)",
                    self.group
                ),
                Err(e) => return Err(classify(&e)),
            }
        }
        let created = self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn put(&mut self, events: &[LogEvent]) -> Result<Rejected, Failure> {
        let mut input = Vec::with_capacity(events.len());
        for event in events {
            let built = InputLogEvent::builder()
                .timestamp(i64::try_from(event.at.0).unwrap_or(i64::MAX))
                .message(event.message.clone())
                .build();
            input.push(built.map_err(|e| Failure::Fatal(e.to_string()))?);
        }
        let output = self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(input))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let Some(info) = output.rejected_log_events_info() else {
            return Ok(Rejected::default());
        };
        let index = |i: Option<i32>| i.and_then(|i| usize::try_from(i).ok());
        Ok(Rejected {
            too_new_start: index(info.too_new_log_event_start_index()),
            too_old_end: index(info.too_old_log_event_end_index()),
            expired_end: index(info.expired_log_event_end_index()),
        })
    }
}

/// Returns the stream name for a template: placeholders filled, `:` and `*` (which stream
/// names cannot hold) replaced by `-`, cut to 512 bytes.
#[must_use]
pub(super) fn fill_stream(template: &str, hostname: &str, instance_id: &str) -> String {
    let name = template
        .replace("{hostname}", hostname)
        .replace("{instance_id}", instance_id)
        .replace([':', '*'], "-");
    let mut end = name.len().min(512);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    if name.is_empty() {
        "egret".to_owned()
    } else {
        name.to_owned()
    }
}

/// Returns the HTTPS client: hyper with rustls on ring, the platform's roots, and the proxy
/// variables (`HTTPS_PROXY`, `NO_PROXY`) of the environment.
async fn stream_name(template: &str, http: SharedHttpClient) -> String {
    let hostname = hostname();
    if !template.contains("{instance_id}") {
        return fill_stream(template, &hostname, "");
    }
    let instance_id = match instance_id(http).await {
        Ok(id) => id,
        Err(why) => {
            tracing::warn!(
                "the log stream name uses {{instance_id}} but {why}: using the host name \
                 {hostname} (set {INSTANCE_ID_ENV} to choose)"
            );
            hostname.clone()
        }
    };
    fill_stream(template, &hostname, &instance_id)
}

/// Returns the instance id: `EGRET_INSTANCE_ID`, else IMDSv2 when on EC2 and allowed.
async fn instance_id(http: SharedHttpClient) -> Result<String, String> {
    if let Some(id) = std::env::var(INSTANCE_ID_ENV)
        .ok()
        .filter(|id| !id.trim().is_empty())
    {
        return Ok(id.trim().to_owned());
    }
    let disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    if disabled {
        return Err(format!(
            "AWS_EC2_METADATA_DISABLED is true and {INSTANCE_ID_ENV} is not set"
        ));
    }
    if !on_ec2() {
        return Err(format!("this is not EC2 and {INSTANCE_ID_ENV} is not set"));
    }
    let client = imds::Client::builder()
        .configure(&ProviderConfig::without_region().with_http_client(http))
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .operation_timeout(IMDS_TIMEOUT * 3)
        .max_attempts(1)
        .build();
    match client.get("/latest/meta-data/instance-id").await {
        Ok(id) => Ok(id.as_ref().trim().to_owned()),
        Err(error) => Err(format!(
            "the instance metadata service did not answer ({})",
            DisplayErrorContext(&error)
        )),
    }
}

/// Returns whether the machine says it is an EC2 instance (Nitro's DMI vendor, or a Xen
/// UUID starting with `ec2`).
fn on_ec2() -> bool {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    read("/sys/class/dmi/id/sys_vendor").trim() == "Amazon EC2"
        || read("/sys/class/dmi/id/board_vendor").trim() == "Amazon EC2"
        || read("/sys/hypervisor/uuid").starts_with("ec2")
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name = name.trim();
    if name.is_empty() {
        "egret".to_owned()
    } else {
        name.to_owned()
    }
}

fn code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
}

/// Sorts a failed call: throttling, 5xx and transport errors are retried, a missing group or
/// stream is created again, a refused batch is halved, anything else is final.
fn classify<E>(error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(error).to_string();
    let Some(service) = error.as_service_error() else {
        // Construction, dispatch (connect, TLS, credentials), timeout and response errors.
        return Failure::Retry(text);
    };
    let status = error.raw_response().map_or(0, |r| r.status().as_u16());
    let code = service.code().unwrap_or_default();
    if code == "ResourceNotFoundException" {
        Failure::Missing(text)
    } else if code == "InvalidParameterException" || status == 413 {
        Failure::Split(text)
    } else if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
        Failure::Retry(text)
    } else {
        Failure::Fatal(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_fill_placeholders_and_drop_forbidden_characters() {
        assert_eq!(fill_stream("{hostname}", "gw-1", ""), "gw-1");
        assert_eq!(
            fill_stream("egret/{instance_id}/{hostname}", "gw-1", "i-0abc"),
            "egret/i-0abc/gw-1"
        );
        assert_eq!(fill_stream("{hostname}", "a:b*c", ""), "a-b-c");
        let long = "é".repeat(300);
        let name = fill_stream("{hostname}", &long, "");
        assert!(name.len() <= 512 && name.len() >= 511, "{}", name.len());
        assert_eq!(fill_stream("{instance_id}", "h", ""), "egret");
    }
}
