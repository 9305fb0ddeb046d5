//! The cases. Each is a plain async function of a [`Ctx`], so the same case runs against any
//! target; trials are named `<target>::<case name>`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use hyper::Method;
use serde_json::{json, Value};

use crate::client::{self, Call, HttpClient};
use crate::harness::Regions;

mod analytics;
mod auth;
mod cache;
mod chat;
mod cost;
mod dashboard;
mod health;
mod keys;
mod lifecycle;
mod limits;
mod limits_shared;
pub mod parity;
pub(crate) mod regions;
mod robustness;
mod routing;
mod sdk;
mod streaming;
mod upstream;
mod validation;

/// What a case knows about the system under test.
pub struct Ctx {
    /// `fly` or `worker`.
    pub target: String,
    /// The gateway, `http://127.0.0.1:PORT`.
    pub base: String,
    pub addr: SocketAddr,
    /// A client key the gateway accepts.
    pub key: String,
    /// Another accepted client key.
    pub second_key: String,
    /// The mock upstream, `http://127.0.0.1:PORT`.
    pub mock: String,
    pub repo: PathBuf,
    pub http: HttpClient,
    /// The multi-region fixture (its own mocks and gateway), set once started; only when a
    /// case that needs it is to run.
    pub regions: OnceLock<Result<Arc<Regions>, String>>,
}

impl Ctx {
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call::new(
            self.http.clone(),
            &self.base,
            &self.target,
            method,
            path,
            &self.key,
        )
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    /// A model name unique to this case and target: the mock ignores everything after `@`, and
    /// counts calls per full name.
    pub fn model(&self, behaviour: &str, case: &str) -> String {
        format!("{behaviour}@{case}_{}", self.target)
    }

    /// How many requests for `model` reached the mock upstream.
    pub async fn upstream_calls(&self, model: &str) -> u64 {
        let v = client::get_json(&self.http, &format!("{}/__calls", self.mock)).await;
        v["models"][model].as_u64().unwrap_or(0)
    }

    /// Asserts how many requests for `model` reached the upstream.
    pub async fn expect_upstream_calls(&self, model: &str, expected: u64, why: &str) {
        let n = self.upstream_calls(model).await;
        assert_eq!(
            n, expected,
            "[{}] upstream calls for '{model}': expected {expected} ({why}), got {n}",
            self.target
        );
    }
}

/// A chat completion call to a gateway a case started itself (not the target's own instance).
pub fn chat_at(ctx: &Ctx, base: &str, key: &str) -> Call {
    Call::new(
        ctx.http.clone(),
        base,
        &ctx.target,
        Method::POST,
        "/v1/chat/completions",
        key,
    )
}

/// A simple chat request body.
pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Case {
    pub name: &'static str,
    pub run: fn(Arc<Ctx>) -> CaseFuture,
    /// The one target this case is about (a runtime-specific mechanism), or `None` for all.
    /// Other targets get no trial for it, rather than a trial that cannot fail.
    pub only: Option<&'static str>,
    /// It uses the target's multi-region fixture ([`Ctx::regions`]).
    pub regions: bool,
    /// The group its trial is named in, `<target>::<group>::<case>` (empty: `<target>::<case>`),
    /// so that a group can be run alone with the filter `::<group>::`: `regions` for the
    /// multi-region cases, `cost` for cost accounting and model selection.
    pub group: &'static str,
}

impl Case {
    pub fn applies_to(&self, target: &str) -> bool {
        self.only.is_none_or(|t| t == target)
    }
}

macro_rules! cases {
    ($only:expr; $($module:ident :: $func:ident),* $(,)?) => {
        cases![$only, false; $($module::$func),*]
    };
    ($only:expr, $regions:expr; $($module:ident :: $func:ident),* $(,)?) => {
        cases![$only, $regions, if $regions { "regions" } else { "" }; $($module::$func),*]
    };
    ($only:expr, $regions:expr, $group:expr; $($module:ident :: $func:ident),* $(,)?) => {
        vec![$(Case {
            name: stringify!($func),
            run: |ctx| Box::pin($module::$func(ctx)),
            only: $only,
            regions: $regions,
            group: $group,
        }),*]
    };
}

/// Every case, in the order they are listed.
pub fn all() -> Vec<Case> {
    let mut all = cases![None;
        health::health_reports_status_version_and_region,
        health::health_head_request_is_answered_without_body,
        routing::models_lists_the_configured_models_without_calling_upstream,
        routing::models_requires_an_api_key,
        routing::unknown_path_is_404_in_openai_shape,
        routing::wrong_method_is_405_with_allow_header,
        chat::chat_completion_returns_choices_usage_and_upstream_headers,
        chat::chat_completion_same_request_gives_same_content,
        chat::request_id_is_a_fresh_uuid_when_client_sends_none,
        chat::request_id_echoes_the_clients_own,
        chat::embeddings_are_forwarded,
        chat::completions_are_forwarded,
        streaming::chat_stream_is_json_chunks_ending_with_done,
        streaming::chat_stream_include_usage_sends_usage_chunk_before_done,
        streaming::chat_stream_events_arrive_unbuffered,
        streaming::stream_cut_off_upstream_ends_with_error_event_and_no_done,
        streaming::stream_error_event_from_upstream_passes_through,
        streaming::stream_silent_upstream_is_ended_with_a_timeout_event_after_the_idle_time,
        streaming::stream_request_answered_with_json_is_relayed_as_it_comes,
        auth::auth_missing_key_is_401_and_never_reaches_upstream,
        auth::auth_wrong_key_is_401_and_never_reaches_upstream,
        auth::auth_second_configured_key_is_accepted,
        auth::auth_client_key_is_replaced_by_upstream_key,
        auth::auth_client_cannot_choose_the_billed_account,
        validation::bad_request_malformed_json_is_400_invalid_json,
        validation::bad_request_missing_model_names_param_model,
        validation::bad_request_model_not_a_string_names_param_model,
        validation::bad_request_missing_messages_names_param_messages,
        validation::bad_request_empty_messages_names_param_messages,
        validation::bad_request_messages_not_an_array_names_param_messages,
        validation::bad_request_stream_not_a_boolean_names_param_stream,
        limits::content_type_text_plain_is_415,
        limits::content_type_multipart_is_415,
        limits::content_type_missing_is_read_as_json,
        limits::content_type_form_urlencoded_is_read_as_json,
        limits::body_over_limit_with_content_length_is_413,
        limits::body_over_limit_chunked_is_413,
        limits::body_over_limit_is_answered_even_to_a_client_that_writes_it_all_first,
        limits::body_sent_too_slowly_is_408,
        upstream::upstream_429_passes_through_with_retry_after,
        upstream::upstream_500_passes_through,
        upstream::upstream_503_passes_through,
        upstream::upstream_truncated_json_is_502_invalid_response,
        upstream::upstream_hangup_is_502_unreachable,
        upstream::upstream_too_slow_is_504_timeout,
        upstream::upstream_slow_within_timeout_succeeds,
        upstream::upstream_bodiless_and_out_of_range_statuses_are_answered_cleanly,
        robustness::garbage_request_line_does_not_kill_gateway,
        robustness::huge_header_does_not_kill_gateway,
        robustness::oversized_headers_are_refused_with_an_openai_shaped_431,
        sdk::openai_sdk_plain_streamed_and_auth_error,
        cache::cache_second_identical_request_is_a_hit_without_upstream_call,
        cache::cache_reordered_keys_and_whitespace_hit,
        cache::cache_each_answer_changing_field_misses,
        cache::cache_delivery_only_fields_do_not_change_the_key,
        cache::cache_is_separate_per_client_key,
        cache::cache_never_stores_upstream_errors,
        cache::cache_never_stores_nondeterministic_requests,
        cache::cache_never_stores_cut_off_or_failed_streams,
        cache::cache_streamed_hit_replays_valid_sse_with_usage_and_done,
        cache::cache_streamed_and_plain_requests_get_their_own_form,
        cache::cache_control_headers_refresh_bypass_and_set_ttl,
        cache::cache_embeddings_and_completions_are_cached,
        cache::cache_concurrent_identical_misses_make_one_upstream_call,
        cache::cache_concurrent_identical_streams_follow_the_leader_live,
    ];
    // `<target>::cost::<case>`: run the group alone with the filter `::cost::`.
    all.extend(cases![None, false, "cost";
        cost::cost_of_a_json_answer_is_usage_times_price_in_header_and_log,
        cost::unpriced_model_has_no_cost_header_and_logs_unpriced,
        cost::cache_hit_answers_cost_0_and_logs_saved_usd,
        cost::server_timing_names_gateway_and_upstream_durations_on_every_response,
        cost::stream_without_usage_requested_hides_the_usage_chunk_and_logs_its_cost,
        cost::stream_with_usage_requested_keeps_the_usage_chunk_and_logs_its_cost,
        cost::stream_cache_hit_replays_the_stream_without_the_usage_chunk,
        cost::auto_resolves_by_hints_in_rule_order,
        cost::tier_aliases_resolve_to_their_first_model,
        cost::cost_budget_nothing_fits_picks_the_cheapest_and_says_over_budget,
        cost::bad_hints_and_unknown_tier_are_400_naming_the_param,
        cost::tier_fallback_tries_the_next_model_when_the_first_fails,
        cost::estimate_answers_the_cost_range_without_calling_upstream,
    ]);
    // `<target>::keys::<case>`: configured keys and their limits; run alone with `::keys::`.
    all.extend(cases![None, false, "keys";
        keys::keys_missing_wrong_and_disabled_keys_are_401_without_upstream_calls,
        keys::keys_models_limit_what_a_key_may_ask_for_with_404_model_not_found,
        keys::keys_rpm_counts_down_refuses_the_excess_and_resets_with_the_window,
        keys::keys_tpm_reserves_prompt_and_max_tokens_and_refuses_the_excess,
        keys::keys_budget_burst_lets_only_what_the_budget_affords_reach_the_upstream,
        keys::keys_cache_hit_counts_against_requests_only,
        keys::keys_info_reports_the_keys_limits_and_what_is_left,
        keys::keys_without_rpm_or_tpm_get_no_ratelimit_headers,
        keys::keys_stream_tokens_are_settled_from_the_streams_usage,
    ]);
    // `<target>::dashboard::<case>`: the page, and the page in headless Chromium.
    all.extend(cases![None, false, "dashboard";
        dashboard::dashboard_page_is_public_html_with_a_hash_based_csp_and_no_other_host,
        dashboard::dashboard_renders_changing_figures_in_headless_chromium,
    ]);
    all.extend(cases![Some("fly");
        lifecycle::fly_invalid_configuration_exits_2_naming_the_setting,
        lifecycle::fly_invalid_upstream_url_is_reported_without_its_password,
        lifecycle::fly_sigterm_drains_in_flight_streams_and_stops_accepting,
        lifecycle::fly_writes_one_json_log_line_per_request_without_secrets,
        lifecycle::fly_keeps_answering_when_nobody_reads_its_log,
        lifecycle::fly_closes_connections_that_stall_in_their_request_head,
        lifecycle::fly_serves_at_most_max_connections_at_once,
        lifecycle::fly_keeps_idle_keepalive_connections_for_the_idle_timeout_not_the_header_timeout,
        cache::cache_redis_is_shared_between_fly_machines,
        cache::cache_failing_redis_still_answers_as_miss,
    ]);
    // `fly::keys::<case>`: keys' limits shared by machines through Redis.
    all.extend(cases![Some("fly"), false, "keys";
        limits_shared::limits_shared_rpm_holds_across_fly_machines_through_redis,
    ]);
    // `worker::keys::<case>`: keys' limits shared by Workers through one Durable Object.
    all.extend(cases![Some("worker"), false, "keys";
        limits_shared::limits_shared_rpm_holds_across_workers_through_one_durable_object,
    ]);
    // `worker::analytics::<case>`: Workers Analytics Engine data points; alone with `::analytics::`.
    all.extend(cases![Some("worker"), false, "analytics";
        analytics::analytics_worker_writes_one_data_point_per_request_with_the_log_lines_facts,
        analytics::analytics_without_the_binding_nothing_changes,
    ]);
    all.extend(cases![Some("worker");
        lifecycle::worker_invalid_configuration_answers_500_naming_the_setting,
        lifecycle::worker_writes_one_json_log_line_per_request_without_secrets,
        cache::cache_unavailable_kv_still_answers_as_miss,
    ]);
    all.extend(cases![None, true;
        regions::failover_on_refused_connection_reaches_the_fallback,
        regions::failover_on_500_reaches_the_next_upstream,
        regions::failover_on_503_reaches_the_next_upstream_and_its_body_retry_after_ejects_it,
        regions::failover_on_408_502_504_reaches_the_next_upstream,
        regions::failover_on_429_skips_the_upstream_for_its_retry_after_then_uses_it_again,
        regions::ejection_follows_retry_after_ms_and_ratelimit_reset_headers,
        regions::insufficient_quota_fails_over_and_ejects_the_upstream_for_the_maximum,
        regions::upstream_401_fails_over_and_ejects_the_upstream_for_the_maximum,
        regions::all_upstreams_401_or_403_is_502_upstream_auth_failed,
        regions::no_retry_on_400_404_413_422,
        regions::all_upstreams_failing_is_the_last_answer_after_max_attempts,
        regions::first_byte_timeout_fails_over_to_the_next_upstream,
        regions::pinned_request_reaches_the_named_upstream_or_region,
        regions::unpinned_request_goes_to_the_upstream_nearest_the_client,
        regions::stream_error_event_before_content_is_replaced_by_the_next_upstream,
        regions::stream_cut_before_content_is_replaced_by_the_next_upstream,
        regions::stream_failing_after_content_ends_with_one_error_event_and_no_done,
        regions::stream_slow_first_byte_gets_keepalive_comments_before_the_data,
        regions::stream_keepalives_continue_while_failing_over_and_the_next_upstream_serves,
        regions::stream_after_keepalives_every_upstream_failing_ends_with_one_error_event,
        regions::breaker_opens_after_3_failures_and_a_successful_trial_after_the_cooldown_closes_it,
        regions::breaker_trial_that_fails_reopens_it_for_twice_the_cooldown,
        regions::status_requires_a_key_and_shows_every_upstream_without_keys,
        regions::log_line_names_the_upstream_and_every_attempt,
    ]);
    all.extend(cases![Some("fly"), true;
        regions::fly_region_header_picks_the_nearest_upstream,
        regions::fly_probes_mark_a_failing_upstream_down_and_bring_it_back,
    ]);
    all.extend(cases![Some("worker"), true;
        regions::worker_cron_probes_mark_a_failing_upstream_down_and_bring_it_back,
    ]);
    all.extend(cases![Some("fly");
        regions::fly_regions_config_with_legacy_settings_exits_2_naming_gateway_config,
    ]);
    all
}
