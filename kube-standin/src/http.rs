//! The HTTP side: connection handling, bearer-token check, fault injection, URL routing
//! (`/api/v1/...`, `/apis/<group>/<version>/...`, namespaced and cluster paths,
//! `status`/`scale` subresources), query parsing and response encoding.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::discovery;
use super::error::ApiError;
use super::faults::Faults;
use super::kinds::ResourceKind;
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::store::{Since, Store};
use super::watch::{self, WatchRequest, WatchStats};
use super::write::{DeleteOptions, FieldValidation, PatchBody, Subresource, WriteOptions};

/// Response body: a whole buffer or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body accepted (as on a real server).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Watch timeout when the client gives none.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Shared {
    /// Objects.
    pub store: Arc<Store>,
    /// Fault switches.
    pub faults: Arc<Faults>,
    /// Open-watch counter.
    pub watch_stats: Arc<WatchStats>,
    /// The accepted bearer token.
    pub token: String,
    /// `host:port`, for `/api`.
    pub address: String,
    /// How often an idle watch gets a bookmark.
    pub bookmark_interval: Duration,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
}

/// Accepts connections until `shared.shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = service_shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shared.shutdown.cancelled() => {}
                result = conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                }
            }
        });
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return text(StatusCode::OK, "ok");
    }
    let authorised = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    if !authorised {
        return error(&ApiError::unauthorized());
    }
    if let Some(delay) = shared.faults.take_delay() {
        tokio::time::sleep(delay).await;
    }
    if shared.faults.take_failure() {
        return error(&ApiError::internal("injected failure"));
    }
    match route(shared, req).await {
        Ok(response) => response,
        Err(e) => error(&e),
    }
}

/// The parsed parts of a resource URL.
struct Target {
    kind: ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    sub: Subresource,
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kinds = || shared.store.kinds();
    let get_only = |method: &Method| {
        if method == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(method.as_str()))
        }
    };
    let aggregated = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let target = match segments.as_slice() {
        ["version"] => {
            get_only(req.method())?;
            return Ok(json(StatusCode::OK, &discovery::version()));
        }
        ["api"] if aggregated => {
            get_only(req.method())?;
            return Ok(aggregated_json(&discovery::aggregated(&kinds(), true)));
        }
        ["apis"] if aggregated => {
            get_only(req.method())?;
            return Ok(aggregated_json(&discovery::aggregated(&kinds(), false)));
        }
        ["api"] => {
            get_only(req.method())?;
            return Ok(json(
                StatusCode::OK,
                &discovery::core_versions(&shared.address),
            ));
        }
        ["apis"] => {
            get_only(req.method())?;
            return Ok(json(StatusCode::OK, &discovery::group_list(&kinds())));
        }
        ["apis", group] => {
            get_only(req.method())?;
            let doc = discovery::group(&kinds(), group).ok_or_else(|| ApiError::no_route(&path))?;
            return Ok(json(StatusCode::OK, &doc));
        }
        ["api", version] => {
            get_only(req.method())?;
            let doc = discovery::resource_list(&kinds(), "", version)
                .ok_or_else(|| ApiError::no_route(&path))?;
            return Ok(json(StatusCode::OK, &doc));
        }
        ["apis", group, version] => {
            get_only(req.method())?;
            let doc = discovery::resource_list(&kinds(), group, version)
                .ok_or_else(|| ApiError::no_route(&path))?;
            return Ok(json(StatusCode::OK, &doc));
        }
        ["api", version, rest @ ..] => resolve(&shared.store, "", version, rest, &path)?,
        ["apis", group, version, rest @ ..] => resolve(&shared.store, group, version, rest, &path)?,
        _ => return Err(ApiError::no_route(&path)),
    };
    let query = parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let metadata_only = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let object = |status: StatusCode, value: &Value| {
        if metadata_only {
            json(status, &watch::partial_metadata(value))
        } else {
            json(status, value)
        }
    };
    let body = read_body(req.into_body()).await?;
    let store = &shared.store;
    let ns = target.namespace.as_deref();
    let opts = write_options(&query)?;
    let kind = &target.kind;
    match (&method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let selectors = selectors(&query)?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch_response(shared, kind, ns, selectors, &query, metadata_only);
            }
            let limit = match query.get("limit") {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit \"{l}\"")))?,
                ),
                None => None,
            };
            let continue_token = query.get("continue").filter(|c| !c.is_empty());
            let page = store.list(
                kind,
                ns,
                &selectors,
                limit,
                continue_token.map(String::as_str),
            )?;
            Ok(list_response(kind, &page, metadata_only))
        }
        (&Method::POST, None) => {
            let body = parse_json(&body)?;
            let created = store.create(kind, ns, body, &opts)?;
            Ok(object(StatusCode::CREATED, &created))
        }
        (&Method::DELETE, None) => {
            let selectors = selectors(&query)?;
            let deleted = store.delete_collection(kind, ns, &selectors);
            let page = super::store::ListPage {
                items: deleted.into_iter().map(Arc::new).collect(),
                resource_version: store.current_rv(),
                continue_token: None,
            };
            Ok(list_response(kind, &page, metadata_only))
        }
        (&Method::GET, Some(name)) => Ok(object(
            StatusCode::OK,
            &store.get(kind, ns, name, target.sub)?,
        )),
        (&Method::PUT, Some(name)) => {
            let body = parse_json(&body)?;
            let updated = store.update(kind, ns, name, target.sub, body, &opts)?;
            Ok(object(StatusCode::OK, &updated))
        }
        (&Method::PATCH, Some(name)) => {
            let patch = match content_type.as_str() {
                "application/merge-patch+json" => PatchBody::Merge(parse_json(&body)?),
                "application/strategic-merge-patch+json" => {
                    PatchBody::Strategic(parse_json(&body)?)
                }
                "application/json-patch+json" => PatchBody::Json(parse_json(&body)?),
                "application/apply-patch+yaml" => PatchBody::Apply(parse_yaml(&body)?),
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let patched = store.patch(kind, ns, name, target.sub, patch, &opts)?;
            Ok(object(StatusCode::OK, &patched))
        }
        (&Method::DELETE, Some(name)) => {
            if target.sub != Subresource::Main {
                return Err(ApiError::method_not_allowed("DELETE"));
            }
            let options = delete_options(&body, &query)?;
            let deleted = store.delete(kind, ns, name, &options)?;
            Ok(object(StatusCode::OK, &deleted))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// Resolves `[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]` under a group/version.
fn resolve(
    store: &Store,
    group: &str,
    version: &str,
    rest: &[&str],
    path: &str,
) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            let mut r = vec![*plural];
            r.extend_from_slice(tail);
            (Some((*ns).to_owned()), r)
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route(path)),
    };
    let kind = store
        .kind(group, version, plural)
        .ok_or_else(|| ApiError::no_route(path))?;
    if namespace.is_some() && !kind.namespaced {
        return Err(ApiError::no_route(path));
    }
    if namespace.is_none() && kind.namespaced && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    let sub = match sub {
        None => Subresource::Main,
        Some("status") if kind.status_subresource => Subresource::Status,
        Some("scale") if kind.scale_subresource => Subresource::Scale,
        Some(_) => return Err(ApiError::no_route(path)),
    };
    Ok(Target {
        kind,
        namespace,
        name: name.map(str::to_owned),
        sub,
    })
}

fn watch_response(
    shared: &Shared,
    kind: &ResourceKind,
    namespace: Option<&str>,
    selectors: Selectors,
    query: &HashMap<String, String>,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => Since::Now,
        Some(rv) => Since::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))?,
        ),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds \"{t}\"")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let request = WatchRequest {
        namespace: namespace.map(str::to_owned),
        selectors,
        since,
        send_initial_events: flag("sendInitialEvents"),
        bookmarks: flag("allowWatchBookmarks"),
        timeout,
        metadata_only,
    };
    let rx = watch::start(
        &shared.store,
        kind,
        request,
        shared.faults.watch_token(),
        shared.bookmark_interval,
        shared.watch_stats.clone(),
    );
    let stream = ReceiverStream::new(rx).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let body = BodyExt::boxed_unsync(StreamBody::new(stream));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn list_response(
    kind: &ResourceKind,
    page: &super::store::ListPage,
    metadata_only: bool,
) -> Response<Body> {
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "resourceVersion".to_owned(),
        Value::String(page.resource_version.to_string()),
    );
    if let Some(token) = &page.continue_token {
        metadata.insert("continue".to_owned(), Value::String(token.clone()));
    }
    let mut out = Vec::with_capacity(256 + page.items.len() * 512);
    let (list_kind, api_version) = if metadata_only {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (format!("{}List", kind.kind), kind.api_version())
    };
    out.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut out, &list_kind);
    out.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, &api_version);
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut out, &metadata);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = if metadata_only {
            serde_json::to_writer(&mut out, &watch::partial_metadata(item))
        } else {
            serde_json::to_writer(&mut out, &**item)
        };
    }
    out.extend_from_slice(b"]}");
    bytes_response(StatusCode::OK, "application/json", Bytes::from(out))
}

fn selectors(query: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?,
    })
}

fn write_options(query: &HashMap<String, String>) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        field_manager: query.get("fieldManager").filter(|m| !m.is_empty()).cloned(),
        force: query.get("force").is_some_and(|v| v == "true"),
        field_validation: FieldValidation::parse(
            query.get("fieldValidation").map_or("", String::as_str),
        )?,
    })
}

fn delete_options(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        parse_json(body)?
    };
    let policy = parsed["propagationPolicy"]
        .as_str()
        .or_else(|| query.get("propagationPolicy").map(String::as_str));
    let dry_run = parsed["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || query.get("dryRun").is_some_and(|v| v == "All");
    Ok(DeleteOptions {
        precondition_rv: parsed["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
        precondition_uid: parsed["preconditions"]["uid"].as_str().map(str::to_owned),
        orphan: policy == Some("Orphan"),
        dry_run,
    })
}

async fn read_body(body: Incoming) -> Result<Vec<u8>, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) => Err(ApiError {
            code: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
            reason: "RequestEntityTooLarge",
            message: format!("request body: {e}"),
            details: None,
        }),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

/// Parses a query string (`application/x-www-form-urlencoded`); the last value wins.
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(status, "application/json", Bytes::from(bytes))
}

fn aggregated_json(value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(
        StatusCode::OK,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        Bytes::from(bytes),
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    bytes_response(status, "text/plain", Bytes::from_static(body.as_bytes()))
}

fn error(e: &ApiError) -> Response<Body> {
    json(e.status_code(), &e.to_status())
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app%20in%20(a%2Cb)&x=a+b&flag&bad=%zz&end=%4");
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["flag"], "");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["end"], "%4");
    }
}
