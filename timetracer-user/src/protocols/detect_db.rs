//! Recognising PostgreSQL and MySQL connections from their first bytes.
