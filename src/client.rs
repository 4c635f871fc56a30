//! A client of the task query API of `tidewater serve`, used by the `tidewater tasks` and
//! `tidewater queues` commands.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::api::{
    ErrorBody, RedriveReport, RedriveRequest, StopAccepted, SubmitRequest, Submitted, TaskRecord,
};
use crate::store::model::{QueuesOverview, TaskDetail, TaskLogs, TaskPage};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is unusable.
    #[error("invalid API URL `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API could not be reached.
    #[error("cannot reach the Tidewater API at {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Its message.
        message: String,
        /// The parameter at fault, if named.
        parameter: Option<String>,
    },
    /// The answer was not what this client expects.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

/// A client bound to one API and token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:8080`), sending `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let mut url = Url::parse(base).map_err(|e| ClientError::Url {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
        if url.scheme() != "http" {
            return Err(ClientError::Url {
                url: base.to_string(),
                reason: "only http:// is supported by this build".into(),
            });
        }
        if url.cannot_be_a_base() {
            return Err(ClientError::Url {
                url: base.to_string(),
                reason: "not a base URL".into(),
            });
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ClientError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Self {
            base: url,
            token,
            http,
        })
    }

    /// `base` + path segments (each percent-encoded) + query.
    pub fn url(&self, segments: &[&str], query: &[(String, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        url
    }

    /// Sends a request; returns the status and the body.
    pub async fn raw(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let http_err = |source| ClientError::Http {
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http_err)?;
        Ok((status, bytes.to_vec()))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query);
        let (status, bytes) = self.raw(method, url.clone(), body).await?;
        if !status.is_success() {
            let (message, parameter) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error, b.parameter),
                Err(_) => (String::from_utf8_lossy(&bytes).trim().to_string(), None),
            };
            return Err(ClientError::Api {
                status,
                message,
                parameter,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// `GET /v1/tasks` with these query parameters.
    pub async fn list(&self, params: &[(String, String)]) -> Result<TaskPage, ClientError> {
        self.call(Method::GET, &["v1", "tasks"], params, None).await
    }

    fn tenant_param(tenant: Option<&str>) -> Vec<(String, String)> {
        tenant
            .map(|t| vec![("tenant".to_string(), t.to_string())])
            .unwrap_or_default()
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn get(&self, id: &str, tenant: Option<&str>) -> Result<TaskDetail, ClientError> {
        self.call(
            Method::GET,
            &["v1", "tasks", id],
            &Self::tenant_param(tenant),
            None,
        )
        .await
    }

    /// `GET /v1/tasks/{id}/logs`, following `next_after` until everything is read.
    pub async fn logs(&self, id: &str, tenant: Option<&str>) -> Result<TaskLogs, ClientError> {
        let mut params = Self::tenant_param(tenant);
        let mut all: Option<TaskLogs> = None;
        loop {
            let page: TaskLogs = self
                .call(Method::GET, &["v1", "tasks", id, "logs"], &params, None)
                .await?;
            let next = page.next_after;
            match &mut all {
                Some(a) => a.logs.extend(page.logs),
                None => all = Some(page),
            }
            match next {
                Some(after) => {
                    params.retain(|(k, _)| k != "after");
                    params.push(("after".into(), after.to_string()));
                }
                None => break,
            }
        }
        let mut all = all.ok_or_else(|| ClientError::Decode {
            url: self.url(&["v1", "tasks", id, "logs"], &[]).to_string(),
            detail: "no answer".into(),
        })?;
        all.next_after = None;
        Ok(all)
    }

    /// `POST /v1/tasks/{id}/stop`.
    pub async fn stop(&self, id: &str, tenant: Option<&str>) -> Result<StopAccepted, ClientError> {
        self.call(
            Method::POST,
            &["v1", "tasks", id, "stop"],
            &Self::tenant_param(tenant),
            None,
        )
        .await
    }

    /// `POST /v1/tasks`.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            url: self.base.to_string(),
            detail: e.to_string(),
        })?;
        self.call(Method::POST, &["v1", "tasks"], &[], Some(body))
            .await
    }

    /// `POST /v1/tasks/redrive`: one page of a redrive.
    pub async fn redrive(&self, req: &RedriveRequest) -> Result<RedriveReport, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            url: self.base.to_string(),
            detail: e.to_string(),
        })?;
        self.call(Method::POST, &["v1", "tasks", "redrive"], &[], Some(body))
            .await
    }

    /// `GET /v1/tasks/{id}/record`: the task's record, read back from its queue topic.
    pub async fn record(&self, id: &str, tenant: Option<&str>) -> Result<TaskRecord, ClientError> {
        self.call(
            Method::GET,
            &["v1", "tasks", id, "record"],
            &Self::tenant_param(tenant),
            None,
        )
        .await
    }

    /// `GET /v1/queues`.
    pub async fn queues(&self, minutes: Option<u32>) -> Result<QueuesOverview, ClientError> {
        let params: Vec<(String, String)> = minutes
            .map(|m| vec![("minutes".to_string(), m.to_string())])
            .unwrap_or_default();
        self.call(Method::GET, &["v1", "queues"], &params, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_ids_and_keep_a_base_path() {
        let c = ApiClient::new("http://127.0.0.1:8080", None).unwrap();
        let u = c.url(
            &["v1", "tasks", "a/b c"],
            &[("status".into(), "failed,running".into())],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/v1/tasks/a%2Fb%20c?status=failed%2Crunning"
        );
        let c = ApiClient::new("http://h:1/prefix", None).unwrap();
        assert_eq!(
            c.url(&["v1", "queues"], &[]).as_str(),
            "http://h:1/prefix/v1/queues"
        );
        assert!(ApiClient::new("https://h", None).is_err());
        assert!(ApiClient::new("not a url", None).is_err());
    }
}
