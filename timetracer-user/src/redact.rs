//! Redaction of secrets before anything reaches disk.
