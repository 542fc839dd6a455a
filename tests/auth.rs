//! Client authentication at the proxy: NOAUTH, WRONGPASS, roles, dangerous
//! commands, passwords from the environment and from files.

mod common;

use common::proxy::Proxy;
use common::{err, q, Cluster};
use slotproxy::config::{Role, Secret, UserConfig};

#[test]
fn users_roles_and_secrets() {
    let cluster = Cluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let ops_file = dir.path().join("ops-password");
    std::fs::write(&ops_file, "ops-pw\n").unwrap();
    // A variable name no other test uses.
    std::env::set_var("SLOTPROXY_TEST_AUTH_APP_PW", "app-pw");
    let user = |name: &str, roles: Vec<Role>| UserConfig {
        name: name.into(),
        password: None,
        password_env: None,
        password_file: None,
        roles,
    };
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.auth.users = vec![
            UserConfig {
                password: Some(Secret("reader-pw".into())),
                ..user("default", vec![Role::Read])
            },
            UserConfig {
                password_env: Some("SLOTPROXY_TEST_AUTH_APP_PW".into()),
                ..user("app", vec![Role::Read, Role::Write])
            },
            UserConfig {
                password_file: Some(ops_file.clone()),
                ..user("ops", vec![Role::Admin])
            },
        ];
    });
    let mut c = proxy.conn();
    assert!(err(&mut c, &["GET", "k"]).starts_with("NOAUTH"));
    assert!(err(&mut c, &["MULTI"]).starts_with("NOAUTH"));
    assert!(err(&mut c, &["AUTH", "wrong"]).starts_with("WRONGPASS"));
    assert!(err(&mut c, &["AUTH", "app", "reader-pw"]).starts_with("WRONGPASS"));
    // HELLO alone does not get past authentication (as in Redis).
    let e = err(&mut c, &["HELLO", "3"]);
    assert!(
        e.starts_with("NOAUTH") && e.contains("HELLO must be called"),
        "{e}"
    );
    let _: () = q(&mut c, &["AUTH", "reader-pw"]);
    // Commands with Redis's `admin` flag need the admin role, even those
    // the proxy answers itself.
    assert!(err(&mut c, &["SLOWLOG", "RESET"]).starts_with("NOPERM"));
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), None);
    assert!(err(&mut c, &["SET", "k", "v"]).starts_with("NOPERM"));
    let _: () = q(&mut c, &["AUTH", "app", "app-pw"]);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2"]);
    assert!(err(&mut c, &["FLUSHALL"]).starts_with("NOPERM"));
    assert!(err(&mut c, &["KEYS", "*"]).contains("dangerous"));
    assert!(err(&mut c, &["PROXY", "TOPOLOGY"]).starts_with("NOPERM"));
    let _: () = q(&mut c, &["AUTH", "ops", "ops-pw"]);
    let _: redis::Value = q(&mut c, &["PROXY", "TOPOLOGY"]);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let _: () = q(&mut c, &["FLUSHALL"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);

    // HELLO with AUTH, as redis-py sends it with a username.
    let mut h = proxy.conn();
    let _: redis::Value = q(&mut h, &["HELLO", "3", "AUTH", "app", "app-pw"]);
    let _: () = q(&mut h, &["SET", "h", "1"]);
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import redis; r = redis.Redis(port={}, username='app', password='app-pw'); \
                 assert r.set('py', 1) and r.get('py') == b'1'; print('ok')",
                proxy.port()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
