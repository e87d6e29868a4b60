//! Fetching a wheel from a package index's simple API, offline: a tiny HTTP server on
//! 127.0.0.1 in this process serves a fake index (JSON or HTML project page) and a tiny
//! wheel, or acts as an HTTP proxy. Nothing leaves the machine.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latentevo_assets::{
    extract_pinned, sha256_bytes, AssetError, Member, PackageIndex, Proxies, WheelSource, WheelSpec,
};

const WHEEL_NAME: &str = "tiny_pkg-1.0-py3-none-any.whl";

/// A tiny wheel (a zip with one member).
fn wheel_bytes() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    z.start_file("tiny_pkg/data.bin", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"pinned bytes\n").unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

fn spec(requirement: &str, sha256: &str) -> WheelSpec {
    WheelSpec {
        requirement: requirement.into(),
        wheel_name: WHEEL_NAME.into(),
        sha256: sha256.into(),
    }
}

/// One canned response.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status: 200,
        content_type,
        body: body.into(),
    }
}

/// A test-only HTTP/1.1 server on 127.0.0.1: answers each connection's one request from
/// `routes` (by path; an absolute-form target, as sent to a proxy, is routed by its path
/// too) with `Connection: close`, 404 for anything else, and records every request head.
/// It stops when dropped.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Server {
        Server::start_with(|_| routes)
    }

    /// With routes that depend on the server's own port.
    fn start_with(routes: impl FnOnce(u16) -> HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = routes(port);
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream, &routes, &h);
                }
            }
        });
        Server {
            port,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: TcpStream, routes: &HashMap<String, Reply>, heads: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    heads.lock().unwrap().push(head);
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target,
    };
    let reply = routes.get(&path).cloned().unwrap_or(Reply {
        status: 404,
        content_type: "text/plain",
        body: b"not found".to_vec(),
    });
    let reason = if reply.status == 200 { "OK" } else { "Not Found" };
    let _ = write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    let _ = stream.write_all(&reply.body);
}

fn json_page(url: &str, sha256: Option<&str>) -> Reply {
    let hashes = match sha256 {
        Some(h) => serde_json::json!({"sha256": h}),
        None => serde_json::json!({}),
    };
    let page = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "tiny-pkg",
        "files": [
            {"filename": "tiny-pkg-1.0.tar.gz", "url": "../../files/tiny-pkg-1.0.tar.gz", "hashes": {}},
            {"filename": WHEEL_NAME, "url": url, "hashes": hashes},
        ],
    });
    ok("application/vnd.pypi.simple.v1+json", page.to_string())
}

fn index_at(url: String) -> WheelSource {
    WheelSource::Index {
        index: PackageIndex::at(&url),
        pip: None,
    }
}

fn only_file(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The JSON form (PEP 691): the page is asked for with its media type, the relative link
/// is resolved against the page, the wheel is downloaded, checked and usable; nothing
/// but the wheel is left in the work directory.
#[test]
fn a_wheel_comes_from_a_json_simple_index() {
    let wheel = wheel_bytes();
    let sha = sha256_bytes(&wheel);
    let server = Server::start(HashMap::from([
        (
            "/simple/tiny-pkg/".to_string(),
            json_page(&format!("../../files/{WHEEL_NAME}"), Some(&sha)),
        ),
        (
            format!("/files/{WHEEL_NAME}"),
            ok("application/octet-stream", wheel.clone()),
        ),
    ]));
    let work = tempfile::tempdir().unwrap();
    let got = spec("tiny-pkg==1.0", &sha)
        .fetch(&index_at(server.url("/simple/")), work.path(), false, "hint")
        .unwrap();
    assert_eq!(got, work.path().join(WHEEL_NAME));
    assert_eq!(std::fs::read(&got).unwrap(), wheel);
    assert_eq!(only_file(work.path()), vec![WHEEL_NAME.to_string()]);
    let member = Member::new("tiny_pkg/data.bin", 13, &sha256_bytes(b"pinned bytes\n"));
    extract_pinned(&got, &member, &work.path().join("out/data.bin")).unwrap();
    let heads = server.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /simple/tiny-pkg/ HTTP/1.1"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("accept: application/vnd.pypi.simple.v1+json"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with(&format!("GET /files/{WHEEL_NAME} HTTP/1.1")),
        "{}",
        heads[1]
    );
}

/// The HTML form (PEP 503), a project name that needs normalising, an index URL without
/// its trailing slash, an absolute link with the hash in its fragment.
#[test]
fn a_wheel_comes_from_an_html_simple_index() {
    let wheel = wheel_bytes();
    let sha = sha256_bytes(&wheel);
    // The files live on another host than the index, as PyPI's do.
    let files = Server::start(HashMap::from([(
        format!("/f/{WHEEL_NAME}"),
        ok("application/zip", wheel.clone()),
    )]));
    let page = format!(
        "<!DOCTYPE html><html><body><h1>Links for tiny-pkg</h1>\n\
         <a href=\"{}#sha256={sha}\" data-requires-python=\"&gt;=3.8\">{WHEEL_NAME}</a><br/>\n</body></html>",
        files.url(&format!("/f/{WHEEL_NAME}"))
    );
    let index = Server::start(HashMap::from([(
        "/pypi/simple/tiny-pkg/".to_string(),
        ok("text/html", page),
    )]));
    let work = tempfile::tempdir().unwrap();
    let got = spec("Tiny._Pkg==1.0", &sha)
        .fetch(&index_at(index.url("/pypi/simple")), work.path(), false, "hint")
        .unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), wheel);
    assert_eq!(index.heads().len(), 1);
    assert_eq!(files.heads().len(), 1);
}

/// Credentials in the index URL go with the requests to the index's host (the page, and
/// a file the page links to by an absolute URL on that host), as pip sends them, and
/// are never printed.
#[test]
fn index_credentials_are_sent_to_the_index_host_and_never_shown() {
    let wheel = wheel_bytes();
    let sha = sha256_bytes(&wheel);
    // The page's link is absolute (no credentials in it), on the index's host.
    let server = Server::start_with(|port| {
        let link = format!("http://127.0.0.1:{port}/files/{WHEEL_NAME}");
        HashMap::from([
            ("/simple/tiny-pkg/".to_string(), json_page(&link, None)),
            (
                format!("/files/{WHEEL_NAME}"),
                ok("application/octet-stream", wheel),
            ),
        ])
    });
    let with_user = server.url("/simple/").replace("http://", "http://user:s3cret@");
    let work = tempfile::tempdir().unwrap();
    spec("tiny-pkg==1.0", &sha)
        .fetch(&index_at(with_user.clone()), work.path(), false, "hint")
        .unwrap();
    // base64("user:s3cret")
    for head in server.heads() {
        assert!(head.contains("Authorization: Basic dXNlcjpzM2NyZXQ="), "{head}");
    }
    // A failure names the index without the password.
    let err = spec("other-pkg==1.0", &sha)
        .fetch(&index_at(with_user), work.path(), false, "hint")
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains(&server.url("/simple/other-pkg/")), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// An HTTP proxy from the settings carries both requests (absolute-form targets); the
/// index host itself is never resolved.
#[test]
fn an_http_proxy_is_used_when_configured() {
    let wheel = wheel_bytes();
    let sha = sha256_bytes(&wheel);
    let proxy = Server::start(HashMap::from([
        (
            "/simple/tiny-pkg/".to_string(),
            json_page(&format!("/files/{WHEEL_NAME}"), Some(&sha)),
        ),
        (
            format!("/files/{WHEEL_NAME}"),
            ok("application/octet-stream", wheel.clone()),
        ),
    ]));
    let source = WheelSource::Index {
        index: PackageIndex {
            proxies: Proxies {
                http: Some(proxy.url("")),
                ..Proxies::none()
            },
            ..PackageIndex::at("http://index.invalid/simple/")
        },
        pip: None,
    };
    let work = tempfile::tempdir().unwrap();
    let got = spec("tiny-pkg==1.0", &sha)
        .fetch(&source, work.path(), false, "hint")
        .unwrap();
    assert_eq!(std::fs::read(got).unwrap(), wheel);
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with("GET http://index.invalid/simple/tiny-pkg/ HTTP/1.1"),
        "{heads:?}"
    );
    assert!(
        heads[1].starts_with(&format!("GET http://index.invalid/files/{WHEEL_NAME} HTTP/1.1")),
        "{heads:?}"
    );
}

/// A file the index lists with another sha256 is not downloaded; a downloaded file
/// with another sha256 is not kept; a file the index does not list is named.
#[test]
fn a_wrong_or_missing_file_is_refused() {
    let wheel = wheel_bytes();
    let sha = sha256_bytes(&wheel);
    let other = "0".repeat(64);
    let listed_wrong = Server::start(HashMap::from([(
        "/simple/tiny-pkg/".to_string(),
        json_page(&format!("/files/{WHEEL_NAME}"), Some(&other)),
    )]));
    let work = tempfile::tempdir().unwrap();
    let err = spec("tiny-pkg==1.0", &sha)
        .fetch(
            &index_at(listed_wrong.url("/simple/")),
            work.path(),
            false,
            "hint",
        )
        .unwrap_err();
    assert!(matches!(err, AssetError::Unavailable(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&other) && msg.contains("not the pinned"), "{msg}");
    assert_eq!(listed_wrong.heads().len(), 1, "the file must not be fetched");

    let mut damaged = wheel.clone();
    damaged[10] ^= 1;
    let serves_wrong = Server::start(HashMap::from([
        (
            "/simple/tiny-pkg/".to_string(),
            json_page(&format!("/files/{WHEEL_NAME}"), None),
        ),
        (
            format!("/files/{WHEEL_NAME}"),
            ok("application/octet-stream", damaged.clone()),
        ),
    ]));
    let msg = spec("tiny-pkg==1.0", &sha)
        .fetch(
            &index_at(serves_wrong.url("/simple/")),
            work.path(),
            false,
            "hint",
        )
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&sha256_bytes(&damaged)) && msg.contains("not the pinned"),
        "{msg}"
    );
    assert!(only_file(work.path()).is_empty(), "{:?}", only_file(work.path()));

    let unlisted = Server::start(HashMap::from([(
        "/simple/tiny-pkg/".to_string(),
        ok(
            "text/html",
            "<html><body><a href=\"/x.whl\">x.whl</a></body></html>",
        ),
    )]));
    let msg = spec("tiny-pkg==1.0", &sha)
        .fetch(&index_at(unlisted.url("/simple/")), work.path(), false, "hint")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("lists no file {WHEEL_NAME} (1 files listed)")),
        "{msg}"
    );
}

/// With the index unreachable, pip is tried next; when both fail, the message names
/// both attempts and why each failed, then the hint.
#[test]
fn when_everything_fails_the_message_names_what_was_tried() {
    // A port nothing listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let source = WheelSource::Index {
        index: PackageIndex::at(&format!("http://127.0.0.1:{port}/simple/")),
        pip: Some(work.path().join("no-such-python").display().to_string()),
    };
    let err = spec("tiny-pkg==1.0", &"0".repeat(64))
        .fetch(&source, work.path(), false, "set TINY_WHEEL")
        .unwrap_err();
    assert!(matches!(err, AssetError::Unavailable(_)), "{err:?}");
    let msg = err.to_string();
    for part in [
        "tiny-pkg==1.0 is not cached and could not be fetched",
        &format!("from the package index http://127.0.0.1:{port}/simple/"),
        &format!("GET http://127.0.0.1:{port}/simple/tiny-pkg/"),
        "; then `",
        "no-such-python -m pip` cannot run",
        "set TINY_WHEEL",
    ] {
        assert!(msg.contains(part), "missing {part:?} in: {msg}");
    }
}
