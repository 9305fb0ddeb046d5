//! `fly-fallback hash-key`, run as a user would: the key on standard input, its SHA-256 out.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `printf %s test-client-key | sha256sum`.
const TEST_CLIENT_KEY_SHA256: &str =
    "5ce15761d99d8887142d76d3f44fc2045ace53e646a6e90c923aa2febc0d10e1";

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fly-fallback"))
        .arg("hash-key")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(mut input) = child.stdin.take() {
        // A process that exits without reading (--help) closes the pipe: not an error here.
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("the binary ends")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn prints_the_keys_sha256_in_lowercase_hex_and_a_newline() {
    for input in [
        &b"test-client-key"[..],
        b"test-client-key\n",
        b"test-client-key\r\n",
        b"test-client-key\nthe second line is not read\n",
    ] {
        let o = run(&[], input);
        assert_eq!(o.status.code(), Some(0), "{input:?}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("{TEST_CLIENT_KEY_SHA256}\n"),
            "{input:?}"
        );
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
    }
}

#[test]
fn agrees_with_the_cores_digest_for_any_printable_key() {
    let key = "sk-gw-AbC_123.xyz~!@#$%^&*()=+[]{}|;:',<>/?é";
    let o = run(&[], key.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}\n", gateway_core::auth::sha256_hex(key))
    );
}

#[test]
fn refuses_empty_input_and_keys_with_spaces_or_control_characters_with_status_2() {
    for (input, says) in [
        (&b""[..], "no key"),
        (b"\n", "no key"),
        (b"\r\n", "no key"),
        (b"my key\n", "spaces or control characters"),
        (b" key", "spaces or control characters"),
        (b"key \n", "spaces or control characters"),
        (b"key\t1", "spaces or control characters"),
        (b"key\x1b[0m", "spaces or control characters"),
        (b"\r", "no key"),
        (b"\xff\xfekey", "not UTF-8"),
    ] {
        let o = run(&[], input);
        assert_eq!(o.status.code(), Some(2), "{input:?}");
        assert!(o.stdout.is_empty(), "{input:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(says), "{input:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("key\t1") && !stderr(&o).contains("my key"),
            "the key is never echoed: {}",
            stderr(&o)
        );
    }
}

#[test]
fn help_shows_the_usage_and_unknown_arguments_are_refused() {
    let o = run(&["--help"], b"");
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    assert!(help.contains("fly-fallback hash-key < keyfile"), "{help}");
    assert!(help.contains("key_sha256"), "{help}");
    let o = run(&["secret-key"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("secret-key"),
        "not echoed: {}",
        stderr(&o)
    );
}
