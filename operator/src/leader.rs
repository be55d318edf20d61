//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules.
//!
//! A candidate reads the Lease every retry period. It takes the Lease when nobody holds it or
//! when the holder has not renewed it for the lease duration, measured on the candidate's own
//! clock from the moment it last saw the Lease change (so clocks need not agree). Every write
//! is a replace carrying the `resourceVersion` that was read, so two candidates racing for the
//! same Lease cannot both win: the loser gets 409 Conflict. The leader renews every retry
//! period; if it cannot renew for the renew deadline, or finds another holder, it has lost the
//! Lease and must stop reconciling. On a clean shutdown the leader releases the Lease so a
//! standby can take over at once instead of waiting for it to expire.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::config::LeaderTimings;

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica now holds the Lease.
    #[error("lease {lease} is now held by {holder:?}")]
    TakenOver {
        /// Lease name.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// The Lease could not be renewed within the renew deadline.
    #[error("could not renew lease {lease} within {deadline:?}: {last_error}")]
    RenewDeadline {
        /// Lease name.
        lease: String,
        /// The configured renew deadline.
        deadline: Duration,
        /// The last failure.
        last_error: String,
    },
}

/// One candidate for one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaderTimings,
    /// The Lease spec last seen and when (on our clock) it was first seen so.
    observed: Option<(LeaseSpec, Instant)>,
}

/// What one acquire-or-renew attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease now.
    Leader,
    /// Someone else holds a valid Lease (or won the race for it).
    Follower {
        /// The holder we saw, if any.
        holder: Option<String>,
    },
}

impl LeaderElector {
    /// A candidate for the Lease `name` in the namespace of `api`.
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timings: LeaderTimings,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timings,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate holds the Lease, trying every retry period. API errors are
    /// logged and retried.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "acquired lease");
                    return;
                }
                Ok(Attempt::Follower { holder }) => {
                    tracing::debug!(lease = %self.name, ?holder, "lease held by another replica");
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "could not read or take lease");
                }
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews the Lease every retry period while we hold it; returns when leadership is lost.
    pub async fn hold(&mut self) -> LeaderError {
        let deadline = self.timings.renew_deadline;
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            let remaining = deadline.saturating_sub(last_renew.elapsed());
            let outcome = tokio::time::timeout(remaining, self.try_acquire_or_renew()).await;
            let last_error = match outcome {
                Ok(Ok(Attempt::Leader)) => {
                    last_renew = Instant::now();
                    continue;
                }
                Ok(Ok(Attempt::Follower { holder })) => {
                    return LeaderError::TakenOver {
                        lease: self.name.clone(),
                        holder: holder.unwrap_or_default(),
                    };
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "renewal timed out".to_owned(),
            };
            tracing::warn!(lease = %self.name, error = %last_error, "lease renewal failed");
            if last_renew.elapsed() >= deadline {
                return LeaderError::RenewDeadline {
                    lease: self.name.clone(),
                    deadline,
                    last_error,
                };
            }
        }
    }

    /// Gives the Lease up if we hold it: empties the holder and shortens the duration to one
    /// second, as client-go's `ReleaseOnCancel` does.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        tracing::info!(lease = %self.name, "released lease");
        Ok(())
    }

    /// One client-go style `tryAcquireOrRenew`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.timings.lease_duration.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX)
            .max(1);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let spec = LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((spec, Instant::now()));
                    Ok(Attempt::Leader)
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Follower { holder: None }),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| seen != &spec);
        if changed {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let i_hold = holder.as_deref() == Some(self.identity.as_str());
        if let Some(other) = holder.as_ref().filter(|_| !i_hold) {
            let valid_for = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(self.timings.lease_duration, Duration::from_secs);
            let seen_at = self
                .observed
                .as_ref()
                .map_or_else(Instant::now, |(_, at)| *at);
            if seen_at.elapsed() < valid_for {
                return Ok(Attempt::Follower {
                    holder: Some(other.clone()),
                });
            }
        }
        let renewed = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if i_hold {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: if i_hold {
                spec.lease_transitions
            } else {
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1))
            },
            ..spec
        };
        lease.spec = Some(renewed.clone());
        // `lease.metadata.resourceVersion` is what we read: a concurrent writer makes this 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((renewed, Instant::now()));
                Ok(Attempt::Leader)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Follower { holder }),
            Err(e) => Err(e),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}
