//! What a write request asks for, apart from its object: which part of the object it
//! addresses, the body of a patch, and the query options of writes and deletes.
//!
//! These plain types sit below the [`Store`](crate::Store) and the checks it runs
//! (`validation`, `defaults`): all three take them from here, so the imports run one way only
//! (the store uses the checks, the checks never use the store).

use serde_json::Value;

use super::error::ApiError;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself (ignores `status` when the kind has a status subresource).
    Main,
    /// `/status`: only `status` is taken from the request.
    Status,
    /// `/scale`: an `autoscaling/v1` `Scale` view of `spec.replicas`.
    Scale,
}

/// The body of a PATCH, by content type.
#[derive(Debug, Clone)]
pub enum PatchBody {
    /// `application/merge-patch+json`.
    Merge(Value),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/json-patch+json`.
    Json(Value),
    /// `application/apply-patch+yaml` (server-side apply).
    Apply(Value),
}

/// Query options shared by writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, persist nothing.
    pub dry_run: bool,
    /// `fieldManager`, recorded in `metadata.managedFields`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply): accepted, no effect (there is no conflict detection).
    pub force: bool,
    /// `fieldValidation`: what to do with fields a CRD schema does not declare.
    pub field_validation: FieldValidation,
}

/// How a write treats fields the schema does not declare (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Refuse the object (400), naming every unknown field.
    Strict,
    /// Prune unknown fields (a real server also sends a `Warning` header); the default.
    #[default]
    Warn,
    /// Prune unknown fields silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter (case as the real server accepts it).
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "Strict" => Ok(Self::Strict),
            "Warn" | "" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// The parts of `DeleteOptions` we honour.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `propagationPolicy: Orphan`: dependents are left alone.
    pub orphan: bool,
    /// `dryRun`.
    pub dry_run: bool,
}
