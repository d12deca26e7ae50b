//! Real servers on 127.0.0.1 for the delivery tests: an HTTP server (tiny_http) answering
//! with scripted statuses and recording every request, and an SMTP sink speaking the protocol
//! (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT) and recording every message.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request the HTTP server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTP server answering each request with the next scripted status (200 when the script
/// is empty).
pub struct HttpSink {
    pub url: String,
    server: Arc<tiny_http::Server>,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpSink {
    pub fn start() -> HttpSink {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<VecDeque<u16>>> = Arc::new(Mutex::new(VecDeque::new()));
        let (s, r, sc) = (server.clone(), requests.clone(), script.clone());
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let status = sc.lock().unwrap().pop_front().unwrap_or(200);
                r.lock().unwrap().push(Request {
                    method: req.method().to_string(),
                    path: req.url().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                    status,
                });
                let mut resp = tiny_http::Response::from_string("ok").with_status_code(status);
                if (300..400).contains(&status) {
                    // A redirect to another path of this server: a client that follows it
                    // shows up as a second request.
                    let to = format!("http://127.0.0.1:{port}/moved");
                    resp.add_header(tiny_http::Header::from_bytes("Location", to).unwrap());
                }
                let _ = req.respond(resp);
            }
        });
        HttpSink {
            url: format!("http://127.0.0.1:{port}/hook"),
            server,
            requests,
            script,
            thread: Some(thread),
        }
    }

    /// Answer the next requests with these statuses, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// The credentials of an AUTH (PLAIN or LOGIN), decoded.
    pub auth: Option<(String, String)>,
}

/// An SMTP server on 127.0.0.1 accepting every message (no TLS).
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for &c in s.trim().as_bytes() {
        let Some(v) = T.iter().position(|&t| t == c) else { continue };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn session(stream: TcpStream, mails: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut mail = Mail { from: String::new(), to: Vec::new(), data: String::new(), auth: None };
    w.write_all(b"220 sink.local ESMTP test sink\r\n")?;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink.local\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd[10..].trim().to_string();
            let arg = if arg.is_empty() {
                w.write_all(b"334 \r\n")?;
                line.clear();
                r.read_line(&mut line)?;
                line.trim().to_string()
            } else {
                arg
            };
            let parts: Vec<String> = b64(&arg).split('\0').map(str::to_string).collect();
            mail.auth =
                Some((parts.get(1).cloned().unwrap_or_default(), parts.get(2).cloned().unwrap_or_default()));
            w.write_all(b"235 2.7.0 Authentication successful\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            w.write_all(b"334 VXNlcm5hbWU6\r\n")?;
            line.clear();
            r.read_line(&mut line)?;
            let user = b64(&line);
            w.write_all(b"334 UGFzc3dvcmQ6\r\n")?;
            line.clear();
            r.read_line(&mut line)?;
            mail.auth = Some((user, b64(&line)));
            w.write_all(b"235 2.7.0 Authentication successful\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].trim().trim_matches(['<', '>']).to_string();
            w.write_all(b"250 2.1.0 OK\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
            w.write_all(b"250 2.1.5 OK\r\n")?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
            }
            mail.data = data;
            mails.lock().unwrap().push(mail.clone());
            mail.to.clear();
            w.write_all(b"250 2.0.0 queued\r\n")?;
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 OK\r\n")?;
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 command not recognized\r\n")?;
        }
    }
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s) = (mails.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = session(stream, &m);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        SmtpSink { port, mails, stop, thread: Some(thread) }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.mails.lock().unwrap().clear();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server that accepts connections and answers one byte every `every` (an SMTP greeting
/// trickled out: each read completes, so a per-read timeout never fires), for `for_at_most`.
pub struct SlowServer {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowServer {
    pub fn start(every: std::time::Duration, for_at_most: std::time::Duration) -> SlowServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut streams: Vec<(TcpStream, usize)> = Vec::new();
            let greeting = b"220 slow.local ESMTP slow server that never finishes its greeting\r\n";
            while !s.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < for_at_most {
                if let Ok((stream, _)) = listener.accept() {
                    streams.push((stream, 0));
                }
                for (st, at) in &mut streams {
                    if *at < greeting.len() - 2 {
                        let _ = st.write_all(&greeting[*at..*at + 1]);
                        *at += 1;
                    }
                }
                std::thread::sleep(every);
            }
        });
        SlowServer { port, stop, thread: Some(thread) }
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
