//! The route table of `iii-http`: `http` bindings by method and path pattern.
//!
//! A pattern is split at `/`; a segment starting with `:` is a parameter. A route is keyed by
//! method and pattern (`POST:users/:id`): registering the same key again replaces it, and two
//! patterns of the same shape with different parameter names conflict. Matching is exact per
//! segment (no trailing-slash folding); when several patterns match, the one whose first
//! differing segment is literal wins (`/users/me` over `/users/:id`).

use std::collections::HashMap;

use crate::engine::wire::Json;

pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub trigger_id: String,
    pub function_id: String,
    pub method: String,
    /// The registered pattern with its leading `/` (what handlers see as `path`).
    pub pattern: String,
    segments: Vec<Segment>,
    pub condition: Option<String>,
    pub middleware: Vec<String>,
    pub metadata: Option<Json>,
}

/// What a binding's `config` says about its route.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RouteConfig {
    #[serde(default)]
    pub api_path: Option<String>,
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub condition_function_id: Option<String>,
    #[serde(default)]
    pub middleware_function_ids: Option<Vec<String>>,
}

fn parse_pattern(path: &str) -> Vec<Segment> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return vec![];
    }
    trimmed
        .split('/')
        .map(|s| match s.strip_prefix(':') {
            Some(name) if !name.is_empty() => Segment::Param(name.to_string()),
            _ => Segment::Literal(s.to_string()),
        })
        .collect()
}

fn shape(segs: &[Segment]) -> Vec<Option<&str>> {
    segs.iter()
        .map(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            Segment::Param(_) => None,
        })
        .collect()
}

#[derive(Default)]
pub struct Routes {
    /// By method.
    by_method: HashMap<String, Vec<Route>>,
}

impl Routes {
    /// Add (or replace) the route of binding `trigger_id`; why not, when it cannot be.
    pub fn add(
        &mut self,
        trigger_id: &str,
        function_id: &str,
        config: RouteConfig,
        metadata: Option<Json>,
    ) -> Result<(), String> {
        let path = config
            .api_path
            .filter(|p| !p.trim().is_empty())
            .ok_or("api_path is required for http triggers")?;
        let method = config
            .http_method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "http_method {method:?} is not one of {}",
                METHODS.join(" ")
            ));
        }
        let segments = parse_pattern(&path);
        self.remove(trigger_id);
        let routes = self.by_method.entry(method.clone()).or_default();
        if let Some(other) = routes
            .iter()
            .find(|r| shape(&r.segments) == shape(&segments) && r.segments != segments)
        {
            return Err(format!(
                "{method} {path} conflicts with {method} {} (same route, other parameter names)",
                other.pattern
            ));
        }
        // The same method and pattern again: the newer binding replaces the older.
        routes.retain(|r| r.segments != segments);
        let pattern = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        routes.push(Route {
            trigger_id: trigger_id.to_string(),
            function_id: function_id.to_string(),
            method,
            pattern,
            segments,
            condition: config.condition_function_id,
            middleware: config.middleware_function_ids.unwrap_or_default(),
            metadata,
        });
        Ok(())
    }

    pub fn remove(&mut self, trigger_id: &str) {
        for routes in self.by_method.values_mut() {
            routes.retain(|r| r.trigger_id != trigger_id);
        }
    }

    /// The route for `method` and `path` (already percent-decoded per segment), with the
    /// parameters it binds.
    pub fn find(
        &self,
        method: &str,
        segments: &[String],
    ) -> Option<(&Route, Vec<(String, String)>)> {
        let routes = self.by_method.get(method)?;
        let mut best: Option<(&Route, Vec<bool>)> = None;
        for r in routes {
            if r.segments.len() != segments.len() {
                continue;
            }
            let fits = r.segments.iter().zip(segments).all(|(s, v)| match s {
                Segment::Literal(l) => l == v,
                Segment::Param(_) => !v.is_empty(),
            });
            if !fits {
                continue;
            }
            let literal: Vec<bool> = r
                .segments
                .iter()
                .map(|s| matches!(s, Segment::Literal(_)))
                .collect();
            if best.as_ref().is_none_or(|(_, b)| literal > *b) {
                best = Some((r, literal));
            }
        }
        let (r, _) = best?;
        let params = r
            .segments
            .iter()
            .zip(segments)
            .filter_map(|(s, v)| match s {
                Segment::Param(name) => Some((name.clone(), v.clone())),
                Segment::Literal(_) => None,
            })
            .collect();
        Some((r, params))
    }

    /// Methods with a route for this path (for CORS preflights and 405s).
    pub fn methods_for(&self, segments: &[String]) -> Vec<&str> {
        METHODS
            .iter()
            .copied()
            .filter(|m| self.find(m, segments).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &str, method: &str) -> RouteConfig {
        RouteConfig {
            api_path: Some(path.into()),
            http_method: Some(method.into()),
            condition_function_id: None,
            middleware_function_ids: None,
        }
    }

    fn segs(p: &str) -> Vec<String> {
        p.trim_start_matches('/')
            .split('/')
            .map(String::from)
            .collect()
    }

    #[test]
    fn params_literals_and_replacement() {
        let mut r = Routes::default();
        r.add("t1", "users::get", cfg("/users/:id", "get"), None)
            .unwrap();
        r.add("t2", "users::me", cfg("users/me", "GET"), None)
            .unwrap();
        let (route, params) = r.find("GET", &segs("/users/42")).unwrap();
        assert_eq!(route.function_id, "users::get");
        assert_eq!(route.pattern, "/users/:id");
        assert_eq!(params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(
            r.find("GET", &segs("/users/me")).unwrap().0.function_id,
            "users::me"
        );
        assert!(r.find("POST", &segs("/users/42")).is_none());
        assert!(r.find("GET", &segs("/users/42/x")).is_none());
        assert!(r.find("GET", &segs("/users/")).is_none());
        // Same key again: replaced.
        r.add("t3", "users::get2", cfg("/users/:id", "GET"), None)
            .unwrap();
        assert_eq!(
            r.find("GET", &segs("/users/1")).unwrap().0.function_id,
            "users::get2"
        );
        // Same shape, other parameter name: refused.
        let e = r
            .add("t4", "x", cfg("/users/:name", "GET"), None)
            .unwrap_err();
        assert!(e.contains("conflicts"), "{e}");
        r.remove("t3");
        assert!(r.find("GET", &segs("/users/1")).is_none());
        assert_eq!(r.methods_for(&segs("/users/me")), vec!["GET"]);
    }

    #[test]
    fn refuses_bad_configs() {
        let mut r = Routes::default();
        assert!(r
            .add("t", "f", cfg("", "GET"), None)
            .unwrap_err()
            .contains("api_path"));
        assert!(r
            .add("t", "f", cfg("/x", "BREW"), None)
            .unwrap_err()
            .contains("BREW"));
        let mut c = cfg("/x", "GET");
        c.http_method = None;
        r.add("t", "f", c, None).unwrap();
        assert!(r.find("GET", &segs("/x")).is_some());
        r.add("root", "f", cfg("/", "GET"), None).unwrap();
        assert!(r.find("GET", &[]).is_some());
    }
}
