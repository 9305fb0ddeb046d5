//! What an instance has served, counted from each request's log record.
