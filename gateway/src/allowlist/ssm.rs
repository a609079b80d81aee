//! Entries from an SSM Parameter Store parameter (`[allowlist] ssm_parameter`), so that a
//! CloudFormation stack update of its domains reaches running gateways within a reload.
//!
//! The client is made on first use and kept (with its credentials and connections) for as
//! long as the region and endpoint stay the same, on a small current-thread runtime of its own:
//! reloads run on the reloader's thread, never on a proxying one.

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::timeout::TimeoutConfig;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::aws;
use crate::config::AllowlistConfig;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt at the call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the call may take, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads the allowlist parameter; holds the client between reloads.
#[derive(Debug, Default)]
pub struct Remote {
    client: Option<SsmClient>,
}

#[derive(Debug)]
struct SsmClient {
    region: Option<String>,
    endpoint: Option<String>,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Remote {
    /// Returns the parameter's value when `[allowlist] ssm_parameter` names one, `None`
    /// otherwise; fails with a message fit for the log.
    pub fn fetch(&mut self, allowlist: &AllowlistConfig) -> Result<Option<String>, String> {
        let Some(name) = &allowlist.ssm_parameter else {
            return Ok(None);
        };
        let region = allowlist.ssm_region.clone();
        let endpoint = allowlist.ssm_endpoint.clone();
        let current = self
            .client
            .take()
            .filter(|c| c.region == region && c.endpoint == endpoint);
        let ssm = match current {
            Some(ssm) => ssm,
            None => SsmClient::new(region, endpoint)?,
        };
        let value = ssm.get(name);
        self.client = Some(ssm);
        value.map(Some)
    }
}

impl SsmClient {
    fn new(region: Option<String>, endpoint: Option<String>) -> Result<SsmClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the SSM client's runtime: {e}"))?;
        let shared = runtime.block_on(aws::load(region.as_deref(), aws::http_client()));
        if shared.region().is_none() {
            return Err(
                "reading the allowlist from SSM needs a region: set [allowlist] \
                        ssm_region, AWS_REGION, or a region in the AWS profile"
                    .to_owned(),
            );
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(CALL_TIMEOUT)
            .build();
        let mut builder = aws_sdk_ssm::config::Builder::from(&shared)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(timeouts);
        if let Some(endpoint) = &endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(SsmClient {
            region,
            endpoint,
            runtime,
            client: Client::from_conf(builder.build()),
        })
    }

    /// Reads the parameter's value (decrypted, for a SecureString).
    fn get(&self, name: &str) -> Result<String, String> {
        let call = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send();
        let output = self.runtime.block_on(call).map_err(|error| {
            let code = error.as_service_error().and_then(|e| e.code());
            match code {
                Some("ParameterNotFound") => "no such parameter".to_owned(),
                Some("AccessDeniedException") => {
                    "access denied (the role needs ssm:GetParameter on it, and kms:Decrypt \
                     for a SecureString)"
                        .to_owned()
                }
                _ => DisplayErrorContext(&error).to_string(),
            }
        })?;
        output
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| "the parameter has no value".to_owned())
    }
}
