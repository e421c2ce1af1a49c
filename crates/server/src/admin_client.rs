//! A client for the operator's API (`/v1/admin/*`), used by `netbill admin`, the demo and
//! the tests.

use netbill_http::client::{CallError, Client};
use netbill_ledger::{Adjustment, Totals};
use netbill_proto::Signed;
use netbill_proto::billing::AccountKind;
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::Checkpoint;
use netbill_proto::{AccountId, Amount};

use crate::api::{AccountInfo, CreateAccount, SetKey, TransferAnswer, TransferRequest};
use crate::records::{AdjustRequest, AuditAccount, CheckpointAnswer, JournalPage};

/// Talks to a billing server's admin API with a bearer token.
#[derive(Clone)]
pub struct AdminClient {
    client: Client,
    token: String,
}

/// A change to an account through the admin API.
#[derive(Clone, Copy, Debug)]
pub enum AdminAction {
    Freeze,
    Unfreeze,
    RevokeKey,
}

impl AdminClient {
    pub fn new(server: &str, token: &str) -> Result<Self, CallError> {
        Ok(Self {
            client: Client::new(server)?,
            token: token.to_string(),
        })
    }

    fn auth(&self) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {}", self.token))]
    }

    pub async fn create_account(
        &self,
        id: &AccountId,
        kind: AccountKind,
        key: PublicKey,
        credit_limit: Option<Amount>,
        low_water: Option<Amount>,
    ) -> Result<AccountInfo, CallError> {
        let req = CreateAccount {
            id: id.clone(),
            kind,
            public_key: key,
            credit_limit,
            low_water,
        };
        self.client
            .call(
                reqwest::Method::POST,
                "/v1/admin/accounts",
                Some(&req),
                &self.auth(),
            )
            .await
    }

    /// A deposit (`payout == false`) or payout, optionally idempotent.
    pub async fn transfer(
        &self,
        id: &AccountId,
        payout: bool,
        amount: Amount,
        idempotency_key: Option<&str>,
    ) -> Result<TransferAnswer, CallError> {
        let mut headers = self.auth();
        if let Some(k) = idempotency_key {
            headers.push(("idempotency-key", k.to_string()));
        }
        let what = if payout { "payout" } else { "deposit" };
        self.client
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/accounts/{id}/{what}"),
                Some(&TransferRequest { amount }),
                &headers,
            )
            .await
    }

    pub async fn act(&self, id: &AccountId, action: AdminAction) -> Result<AccountInfo, CallError> {
        let what = match action {
            AdminAction::Freeze => "freeze",
            AdminAction::Unfreeze => "unfreeze",
            AdminAction::RevokeKey => "revoke-key",
        };
        self.client
            .call::<(), _>(
                reqwest::Method::POST,
                &format!("/v1/admin/accounts/{id}/{what}"),
                None,
                &self.auth(),
            )
            .await
    }

    pub async fn set_key(&self, id: &AccountId, key: PublicKey) -> Result<AccountInfo, CallError> {
        self.client
            .call(
                reqwest::Method::PUT,
                &format!("/v1/admin/accounts/{id}/key"),
                Some(&SetKey { public_key: key }),
                &self.auth(),
            )
            .await
    }

    pub async fn show(&self, id: &AccountId) -> Result<AccountInfo, CallError> {
        self.client
            .call::<(), _>(
                reqwest::Method::GET,
                &format!("/v1/admin/accounts/{id}"),
                None,
                &self.auth(),
            )
            .await
    }

    /// Checks conservation on the server; a violation comes back as a problem.
    pub async fn conservation(&self) -> Result<Totals, CallError> {
        self.client
            .call::<(), _>(
                reqwest::Method::GET,
                "/v1/admin/conservation",
                None,
                &self.auth(),
            )
            .await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.client
            .call::<(), _>(reqwest::Method::GET, path, None, &self.auth())
            .await
    }

    fn page(path: &str, after: Option<&str>) -> String {
        match after {
            Some(a) => format!("{path}?after={}", netbill_http::client::query_escape(a)),
            None => path.to_string(),
        }
    }

    /// One page of the journal after entry `after`.
    pub async fn journal(&self, after: u64) -> Result<JournalPage, CallError> {
        self.get(&format!("/v1/journal?after={after}")).await
    }

    /// N's signed checkpoints after entry `after`.
    pub async fn checkpoints(&self, after: u64) -> Result<Vec<Signed<Checkpoint>>, CallError> {
        self.get(&format!("/v1/journal/checkpoints?after={after}"))
            .await
    }

    /// One page of accounts after the id `after`.
    pub async fn audit_accounts(
        &self,
        after: Option<&str>,
    ) -> Result<Vec<AuditAccount>, CallError> {
        self.get(&Self::page("/v1/admin/audit/accounts", after))
            .await
    }

    /// One page of committed purchases after the EPOID `after`.
    pub async fn audit_purchases(
        &self,
        after: Option<&str>,
    ) -> Result<Vec<netbill_ledger::PurchaseRecord>, CallError> {
        self.get(&Self::page("/v1/admin/audit/purchases", after))
            .await
    }

    /// One page of refunds after the refund id `after`.
    pub async fn audit_refunds(
        &self,
        after: Option<&str>,
    ) -> Result<Vec<netbill_ledger::RefundRecord>, CallError> {
        self.get(&Self::page("/v1/admin/audit/refunds", after))
            .await
    }

    /// The totals as stored, whether or not they conserve.
    pub async fn totals(&self) -> Result<Totals, CallError> {
        self.get("/v1/admin/audit/totals").await
    }

    /// Asks N to sign a checkpoint of the journal's head now. With `acknowledge`, even if
    /// the journal since the last checkpoint does not chain (after an audit).
    pub async fn checkpoint(&self, acknowledge: bool) -> Result<CheckpointAnswer, CallError> {
        let path = if acknowledge {
            "/v1/admin/checkpoint?acknowledge=true"
        } else {
            "/v1/admin/checkpoint"
        };
        self.client
            .call::<(), _>(reqwest::Method::POST, path, None, &self.auth())
            .await
    }

    /// Applies adjustments (from `netbill audit --unwind`); the totals after.
    pub async fn adjust(&self, adjustments: Vec<Adjustment>) -> Result<Totals, CallError> {
        self.client
            .call(
                reqwest::Method::POST,
                "/v1/admin/adjustments",
                Some(&AdjustRequest { adjustments }),
                &self.auth(),
            )
            .await
    }
}
