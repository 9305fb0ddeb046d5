//! The Worker's Analytics Engine data point: the facts of the request's log line, in the
//! dataset's `indexes`/`blobs`/`doubles` form.
