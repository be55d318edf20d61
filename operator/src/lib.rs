//! `keda-http-operator`: turns HTTPScaledObjects into KEDA ScaledObjects.
//!
//! Owns the HTTPScaledObject reconciler, CRD status conditions, the finalizer and leader
//! election. It does not route traffic or compute metrics.
