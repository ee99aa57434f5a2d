//! The fine-tuning jobs API: the handlers. The jobs and their timeline are [`crate::jobs`].

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::{
    self, ApiError, ApiResult, check_len, json, only_keys, opt_int, opt_str, parse_object,
    query_get, query_limit, req_str,
};
use crate::app::App;
use crate::clock::ts;
use crate::files::{Files, new_file_id};
use crate::jobs::{
    CheckWork, EventObject, Job, Jobs, Phase, Requested, Timing, method_name, no_such_job,
};
use crate::models;
use crate::training_file::Method;

/// Checks a job's files in the background, then saves the verdict with the store.
pub(crate) fn spawn_check(app: &App, work: CheckWork) {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        work.run(|| app.clock.now());
        app.save_now();
    });
}

#[derive(Serialize)]
struct List<T> {
    object: &'static str,
    data: Vec<T>,
    has_more: bool,
}

/// Parses one hyperparameter: `"auto"` (None) or a number in range.
fn hyper_value(
    v: &Value,
    param: &str,
    integer: bool,
    min: f64,
    max: f64,
    min_open: bool,
) -> ApiResult<Option<f64>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s == "auto" => Ok(None),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if integer && n.as_i64().is_none() {
                return Err(ApiError::wrong_type(param, "an integer or 'auto'", v));
            }
            let below = if min_open { x <= min } else { x < min };
            if below || x > max || !x.is_finite() {
                let bound = if min_open {
                    format!("> {min}")
                } else {
                    format!(">= {min}")
                };
                return Err(ApiError::invalid(format!(
                    "Invalid '{param}': expected 'auto' or a number {bound} and <= {max}, but got {x} instead."
                ))
                .param(param)
                .code("invalid_value"));
            }
            Ok(Some(x))
        }
        other => Err(ApiError::wrong_type(
            param,
            if integer {
                "an integer or 'auto'"
            } else {
                "a number or 'auto'"
            },
            other,
        )),
    }
}

fn parse_hyper(v: Option<&Value>, prefix: &str, dpo: bool) -> ApiResult<Requested> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Requested::default()),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ApiError::wrong_type(prefix, "an object", other)),
    };
    let allowed: &[&str] = if dpo {
        &["beta", "batch_size", "learning_rate_multiplier", "n_epochs"]
    } else {
        &["batch_size", "learning_rate_multiplier", "n_epochs"]
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::unknown_argument(&format!("{prefix}.{k}")));
    }
    let get = |key: &str, integer, min, max, open| -> ApiResult<Option<f64>> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => hyper_value(v, &format!("{prefix}.{key}"), integer, min, max, open),
        }
    };
    Ok(Requested {
        n_epochs: get("n_epochs", true, 1.0, 50.0, false)?.map(|x| x as u32),
        batch_size: get("batch_size", true, 1.0, 256.0, false)?.map(|x| x as u32),
        learning_rate_multiplier: get("learning_rate_multiplier", false, 0.0, f64::MAX, true)?,
        beta: if dpo {
            get("beta", false, 0.0, 2.0, true)?
        } else {
            None
        },
    })
}

fn parse_method(
    method: Option<&Value>,
    hyperparameters: Option<&Value>,
    model: &str,
) -> ApiResult<(Method, Requested)> {
    let map = match method {
        None | Some(Value::Null) => {
            return Ok((
                Method::Supervised,
                parse_hyper(hyperparameters, "hyperparameters", false)?,
            ));
        }
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ApiError::wrong_type("method", "an object", other)),
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["type", "supervised", "dpo", "reinforcement"].contains(&k.as_str()))
    {
        return Err(ApiError::unknown_argument(&format!("method.{k}")));
    }
    let kind =
        opt_str(map, "type", "method.type")?.ok_or_else(|| ApiError::missing("method.type"))?;
    let body = |name: &str| -> ApiResult<Option<&Value>> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                if let Some(k) = m.keys().find(|k| k.as_str() != "hyperparameters") {
                    return Err(ApiError::unknown_argument(&format!("method.{name}.{k}")));
                }
                Ok(m.get("hyperparameters"))
            }
            Some(other) => Err(ApiError::wrong_type(
                &format!("method.{name}"),
                "an object",
                other,
            )),
        }
    };
    match kind.as_str() {
        "supervised" => {
            let requested = match body("supervised")? {
                Some(h) => parse_hyper(Some(h), "method.supervised.hyperparameters", false)?,
                None => parse_hyper(hyperparameters, "hyperparameters", false)?,
            };
            Ok((Method::Supervised, requested))
        }
        "dpo" => {
            let requested = parse_hyper(body("dpo")?, "method.dpo.hyperparameters", true)?;
            Ok((Method::Dpo, requested))
        }
        "reinforcement" => Err(ApiError::invalid(format!(
            "Model {model} does not support the reinforcement fine-tuning method."
        ))
        .param("method.type")),
        other => Err(ApiError::invalid(format!(
            "Invalid value for 'method.type': expected one of 'supervised', 'dpo' or 'reinforcement', but got '{other}' instead."
        ))
        .param("method.type")
        .code("invalid_value")),
    }
}

fn parse_metadata(v: Option<&Value>) -> ApiResult<Option<Map<String, Value>>> {
    let map = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ApiError::wrong_type("metadata", "an object", other)),
    };
    if map.len() > 16 {
        return Err(ApiError::invalid(format!(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an object with {} properties instead.",
            map.len()
        ))
        .param("metadata")
        .code("object_above_max_size"));
    }
    for (k, v) in map {
        let n = k.chars().count();
        if n > 64 {
            return Err(ApiError::invalid(format!(
                "Invalid 'metadata': keys can be at most 64 characters long, but '{}...' has {n}.",
                k.chars().take(16).collect::<String>()
            ))
            .param("metadata")
            .code("string_above_max_length"));
        }
        match v {
            Value::String(s) => check_len(&format!("metadata.{k}"), s, 0, 512)?,
            other => {
                return Err(ApiError::wrong_type(
                    &format!("metadata.{k}"),
                    "a string",
                    other,
                ));
            }
        }
    }
    Ok(Some(map.clone()))
}

fn parse_integrations(v: Option<&Value>) -> ApiResult<Vec<Value>> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(ApiError::wrong_type("integrations", "an array", other)),
    };
    if items.len() > 5 {
        return Err(ApiError::invalid(format!(
            "Invalid 'integrations': array too long. Expected an array with maximum length 5, but got an array with length {} instead.",
            items.len()
        ))
        .param("integrations")
        .code("array_above_max_length"));
    }
    for (i, item) in items.iter().enumerate() {
        let param = format!("integrations[{i}]");
        let ok = item.get("type").and_then(Value::as_str) == Some("wandb")
            && item
                .get("wandb")
                .and_then(|w| w.get("project"))
                .is_some_and(Value::is_string);
        if !ok {
            return Err(ApiError::invalid(format!(
                "Invalid '{param}': expected {{\"type\": \"wandb\", \"wandb\": {{\"project\": ...}}}}."
            ))
            .param(param));
        }
    }
    Ok(items.clone())
}

/// The model a job reports and the base snapshot it trains, by OpenAI's rules: a model
/// the table says fine-tunes (an alias reports its snapshot), or an `ft:` model of this
/// organization to continue training.
fn fine_tuning_base(jobs: &Jobs, model: &str, now: f64, org: &str) -> ApiResult<(String, String)> {
    let not_available = || {
        ApiError::invalid(format!(
            "Model {model} is not available for fine-tuning or does not exist."
        ))
        .code("model_not_available")
    };
    if model.starts_with("ft:") {
        let base = jobs
            .fine_tuned_base(model, now, org)
            .ok_or_else(not_available)?;
        return Ok((model.to_owned(), base.to_owned()));
    }
    let base = models::find(model)
        .filter(|m| m.training_context.is_some())
        .ok_or_else(not_available)?;
    Ok((base.name.to_owned(), base.name.to_owned()))
}

/// The bytes of a file a job names as `param`: it must exist and have purpose `fine-tune`.
fn fine_tune_file(files: &Files, id: &str, param: &'static str, now: f64) -> ApiResult<Bytes> {
    let file = files
        .get(id, now)
        .ok_or_else(|| ApiError::invalid(format!("invalid {param}: {id}")).param(param))?;
    if file.purpose != "fine-tune" {
        return Err(ApiError::invalid(format!(
            "File {id} has purpose '{}', but fine-tuning needs files uploaded with purpose 'fine-tune'.",
            file.purpose
        ))
        .param(param));
    }
    Ok(file.data.clone())
}

/// `POST /fine_tuning/jobs`.
pub(crate) async fn create_job(State(app): State<App>, body: Bytes) -> ApiResult {
    let map = parse_object(&body)?;
    only_keys(
        &map,
        &[
            "model",
            "training_file",
            "validation_file",
            "hyperparameters",
            "suffix",
            "seed",
            "integrations",
            "method",
            "metadata",
        ],
    )?;
    let model = req_str(&map, "model")?;
    let training_file = req_str(&map, "training_file")?;
    let validation_file = opt_str(&map, "validation_file", "validation_file")?;
    let suffix = opt_str(&map, "suffix", "suffix")?;
    if let Some(s) = &suffix {
        check_len("suffix", s, 1, 64)?;
    }
    let seed = opt_int(&map, "seed", "seed", 0, 2_147_483_647)?;
    let metadata = parse_metadata(map.get("metadata"))?;
    let integrations = parse_integrations(map.get("integrations"))?;
    let (method, requested) = parse_method(map.get("method"), map.get("hyperparameters"), &model)?;

    let now = app.clock.now();
    let mut store = app.store_at(now);
    let (model_out, base) = fine_tuning_base(&store.jobs, &model, now, &app.config.org)?;
    let lookup = |id: &str, param: &'static str| fine_tune_file(&store.files, id, param, now);
    let training = lookup(&training_file, "training_file")?;
    let validation = match &validation_file {
        Some(id) => Some(lookup(id, "validation_file")?),
        None => None,
    };

    let id = format!("ftjob-{}", api::random_id(24));
    let job = Job {
        key: api::derived_id(&id, 16),
        model_id: api::random_id(8),
        results_file_id: new_file_id(),
        id,
        created: now,
        model: model_out,
        base,
        training_file,
        validation_file,
        suffix,
        seed: seed.unwrap_or_else(|| i64::from(rand::random::<u32>() >> 1)),
        metadata,
        integrations,
        method,
        requested,
        timing: Timing {
            validating: app.config.validating_secs,
            queued: app.config.queued_secs,
            step: app.config.step_secs,
        },
        check: Arc::new(OnceLock::new()),
        plan: None,
        cancelled_at: None,
        results_published: false,
    };
    tracing::info!(job_id = %job.id, model = %job.model, "fine-tuning job created");
    let response = json(&job.render(now, &app.config.org, &app.org_id));
    let work = job.check_work(training, validation);
    store.jobs.items.push(job);
    app.save(&store);
    drop(store);
    spawn_check(&app, work);
    Ok(response)
}

/// `GET /fine_tuning/jobs`: newest first; `after`, `limit` (default 20), `metadata[k]=v`.
pub(crate) async fn list_jobs(
    State(app): State<App>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let limit = query_limit(&query, 20, 10_000)?;
    let mut want: Vec<(&str, &str)> = Vec::new();
    let mut want_none = false;
    for (k, v) in &query {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|r| r.strip_suffix(']'))
        {
            want.push((key, v));
        } else if k == "metadata" && v == "null" {
            want_none = true;
        }
    }
    let now = app.clock.now();
    let store = app.store_at(now);
    let jobs: Vec<&Job> = store
        .jobs
        .items
        .iter()
        .rev()
        .filter(|j| {
            if want_none {
                return j.metadata.as_ref().is_none_or(Map::is_empty);
            }
            want.iter().all(|(k, v)| {
                j.metadata
                    .as_ref()
                    .and_then(|m| m.get(*k))
                    .and_then(Value::as_str)
                    == Some(*v)
            })
        })
        .collect();
    let (page, has_more) = api::page(jobs, query_get(&query, "after"), limit, |j| &j.id);
    Ok(json(&List {
        object: "list",
        data: page
            .iter()
            .map(|j| j.render(now, &app.config.org, &app.org_id))
            .collect(),
        has_more,
    }))
}

/// `GET /fine_tuning/jobs/{id}`.
pub(crate) async fn get_job(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    let store = app.store_at(now);
    let job = store.jobs.get(&id)?;
    Ok(json(&job.render(now, &app.config.org, &app.org_id)))
}

/// `POST /fine_tuning/jobs/{id}/cancel`: freezes the job's history now.
pub(crate) async fn cancel_job(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    let mut store = app.store_at(now);
    let job = store
        .jobs
        .items
        .iter_mut()
        .find(|j| j.id == id)
        .ok_or_else(|| no_such_job(&id))?;
    let phase = job.phase(now);
    if phase.terminal() {
        return Err(ApiError::invalid(format!(
            "Cannot cancel a job that has already {}.",
            match phase {
                Phase::Succeeded => "succeeded",
                Phase::Failed => "failed",
                _ => "been cancelled",
            }
        ))
        .param("fine_tuning_job_id"));
    }
    job.cancelled_at = Some(now);
    tracing::info!(job_id = %id, "fine-tuning job cancelled");
    let response = json(&job.render(now, &app.config.org, &app.org_id));
    app.save(&store);
    Ok(response)
}

/// `GET /fine_tuning/jobs/{id}/events`: newest first; `after` pages towards older events.
pub(crate) async fn list_events(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let limit = query_limit(&query, 20, 10_000)?;
    let now = app.clock.now();
    let store = app.store_at(now);
    let job = store.jobs.get(&id)?;
    let horizon = job.horizon(now);
    let timeline = job.timeline();
    let visible = timeline.iter().take_while(|(t, _)| *t <= horizon).count();
    let start = match query_get(&query, "after") {
        None => 0,
        Some(after) => {
            let seq = after
                .strip_prefix("ftevent-")
                .and_then(|rest| rest.strip_prefix(job.key.as_str()))
                .and_then(api::unbase62)
                .filter(|&s| (s as usize) < visible);
            match seq {
                // Newest first: the event after `seq` is the one before it in time.
                Some(s) => visible - s as usize,
                None => visible,
            }
        }
    };
    let data: Vec<EventObject> = (0..visible)
        .rev()
        .skip(start)
        .take(limit)
        .map(|seq| {
            let (at, ev) = timeline[seq];
            job.render_event(seq, at, ev, &app.config.org)
        })
        .collect();
    let has_more = start + data.len() < visible;
    Ok(json(&List {
        object: "list",
        data,
        has_more,
    }))
}

/// `GET /fine_tuning/jobs/{id}/checkpoints`: newest first; `after`, `limit` (default 10).
pub(crate) async fn list_checkpoints(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    #[derive(Serialize)]
    struct CheckpointMetrics {
        step: u64,
        train_loss: f64,
        train_mean_token_accuracy: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        valid_loss: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        valid_mean_token_accuracy: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        full_valid_loss: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        full_valid_mean_token_accuracy: Option<f64>,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    #[derive(Serialize)]
    struct Checkpoint {
        object: &'static str,
        id: String,
        created_at: i64,
        fine_tuned_model_checkpoint: String,
        fine_tuning_job_id: String,
        metrics: CheckpointMetrics,
        step_number: u64,
    }
    #[derive(Serialize)]
    struct CheckpointList {
        object: &'static str,
        data: Vec<Checkpoint>,
        has_more: bool,
        first_id: Option<String>,
        last_id: Option<String>,
    }

    let limit = query_limit(&query, 10, 10_000)?;
    let now = app.clock.now();
    let store = app.store_at(now);
    let job = store.jobs.get(&id)?;
    let horizon = job.horizon(now);
    let mut all: Vec<Checkpoint> = Vec::new();
    if let Some((_, train)) = job.train() {
        for step in job.checkpoint_steps() {
            let Some(at) = job.step_time(step).filter(|&at| at <= horizon) else {
                continue;
            };
            let m = job.metrics(train, step);
            all.push(Checkpoint {
                object: "fine_tuning.job.checkpoint",
                id: format!("ftckpt_{}{}", job.key, api::base62(step, 8)),
                created_at: ts(at),
                fine_tuned_model_checkpoint: job.checkpoint_model(step, &app.config.org),
                fine_tuning_job_id: job.id.clone(),
                metrics: CheckpointMetrics {
                    step,
                    train_loss: m.train_loss,
                    train_mean_token_accuracy: m.train_acc,
                    valid_loss: m.valid_loss,
                    valid_mean_token_accuracy: m.valid_acc,
                    full_valid_loss: m.full_valid_loss,
                    full_valid_mean_token_accuracy: m.full_valid_acc,
                    kind: method_name(job.method),
                },
                step_number: step,
            });
        }
    }
    all.reverse();
    let (data, has_more) = api::page(all, query_get(&query, "after"), limit, |c| &c.id);
    Ok(json(&CheckpointList {
        object: "list",
        first_id: data.first().map(|c| c.id.clone()),
        last_id: data.last().map(|c| c.id.clone()),
        data,
        has_more,
    }))
}
