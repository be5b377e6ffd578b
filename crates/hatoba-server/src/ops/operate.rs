//! Operations on a deployment in progress: approve it, promote it (to the
//! next step or to all traffic), abort it. Each is passed to the deployment's
//! task as an `Operator` command; the answer says it was passed on, not
//! what the rollout made of it (the deployment's events say that).

use super::OpError;
use crate::deployer::Operator;
use crate::server::Server;
use hatoba_core::{DeploymentId, ServiceName};
use hatoba_rollout::Input;
use std::sync::PoisonError;

/// What a person asks of a deployment in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// On to the next step (`hatoba promote`).
    Promote,
    /// All traffic on the new version now (`hatoba promote --full`).
    PromoteFull,
    /// Back to what served (`hatoba abort`).
    Abort,
}

impl Action {
    /// Its name in the API's path and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Abort => "abort",
        }
    }
}

impl Server {
    /// `hatoba approve`: starts a deployment that waits for approval, when
    /// the approver is not the one who deployed it. Audited either way.
    pub async fn approve(&self, id: &str, by: String) -> Result<hatoba_api::Approval, OpError> {
        let Ok(id) = id.parse::<DeploymentId>() else {
            return Err(OpError::bad_input(format!(
                "`{}` is not a deployment id",
                hatoba_core::shown(id)
            )));
        };
        let deployment = match self.store.deployment(&id).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(OpError::not_found(format!("no deployment {id}")));
            }
            Err(e) => return Err(OpError::store(&e)),
        };
        let audit = |outcome: hatoba_store::AuditOutcome, detail: String| hatoba_store::NewAudit {
            at: crate::clock_now(),
            actor: by.clone(),
            action: "approve".to_owned(),
            target: id.to_string(),
            outcome,
            detail: Some(detail),
        };
        if deployment.status != hatoba_core::DeploymentStatus::Pending {
            return Err(OpError::conflict(format!(
                "deployment {id} is {}, not waiting for approval",
                deployment.status
            )));
        }
        if deployment.deployed_by == by {
            let _ = self
                .store
                .record_audit(audit(
                    hatoba_store::AuditOutcome::Denied,
                    "the deployer cannot approve their own deployment".to_owned(),
                ))
                .await;
            return Err(OpError::forbidden(format!(
                "{by} deployed {id} and cannot also approve it"
            ))
            .hint("someone else approves: `hatoba approve ID --as NAME`"));
        }
        let tx = self.service(&deployment.service).and_then(|s| {
            s.live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .filter(|(live, _)| live.as_ref() == Some(&id))
                .map(|(_, tx)| tx.clone())
        });
        let Some(tx) = tx else {
            return Err(OpError::conflict(format!(
                "deployment {id} is not run by this server"
            )));
        };
        let _ = tx.send(Operator::Approve { by: by.clone() }).await;
        let _ = self
            .store
            .record_audit(audit(hatoba_store::AuditOutcome::Ok, "approved".to_owned()))
            .await;
        Ok(hatoba_api::Approval {
            deployment: id.to_string(),
            approved_by: by,
        })
    }

    /// `hatoba promote|abort`: passes the action to the service's deployment
    /// in progress.
    pub async fn operate(
        &self,
        name: &str,
        action: Action,
        by: String,
    ) -> Result<hatoba_api::OperatorAction, OpError> {
        let Some(state) = name
            .parse::<ServiceName>()
            .ok()
            .and_then(|n| self.service(&n))
        else {
            return Err(OpError::not_found(format!(
                "no service `{}`",
                hatoba_core::shown(name)
            )));
        };
        let input = match action {
            Action::Promote => Operator::Promote { full: false, by },
            Action::PromoteFull => Operator::Promote { full: true, by },
            Action::Abort => Operator::Input(Input::Abort(format!("aborted by {by}"))),
        };
        let live = state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match live {
            Some((id, tx)) => {
                let _ = tx.send(input).await;
                let id = id.map(|i| i.to_string()).unwrap_or_default();
                Ok(hatoba_api::OperatorAction {
                    deployment: id,
                    action: action.as_str().to_owned(),
                })
            }
            None => Err(OpError::conflict(format!(
                "service `{name}` has no deployment in progress"
            ))
            .hint("`hatoba history` lists past deployments")),
        }
    }
}
