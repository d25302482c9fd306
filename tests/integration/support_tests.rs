//! Tests of the test toolkit itself: the partition proxy, the linearizability checker and the
//! pure parts of the cluster helper (no raftkine process needed).

mod proxy {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::support::proxy::Proxy;

    /// An echo server on a free port, served by a task of the test's runtime.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads the echo, or `None` if nothing (or EOF) comes within 300 ms.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        if stream.write_all(msg).await.is_err() {
            return None;
        }
        read_exact_within(stream, msg.len(), Duration::from_millis(300)).await
    }

    async fn read_exact_within(
        stream: &mut TcpStream,
        len: usize,
        within: Duration,
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        match tokio::time::timeout(within, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    /// Whether the peer closed the connection within a second.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }

    #[tokio::test]
    async fn forwards_both_ways() {
        let proxy = Proxy::start(echo_server().await);
        assert_ne!(proxy.addr().port(), proxy.target().port());
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut a, b"hello").await.as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            round_trip(&mut b, b"world").await.as_deref(),
            Some(&b"world"[..])
        );
        let big = vec![7u8; 1 << 20];
        a.write_all(&big).await.unwrap();
        let echoed = read_exact_within(&mut a, big.len(), Duration::from_secs(5)).await;
        assert!(echoed == Some(big), "1 MiB echoed intact");
        assert_eq!(proxy.forwarding(), 2);
    }

    #[tokio::test]
    async fn cut_closes_forwarding_connections() {
        let proxy = Proxy::start(echo_server().await);
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut a, b"x").await.is_some());
        proxy.cut();
        assert!(proxy.is_cut());
        assert!(
            closed(&mut a).await,
            "a connection forwarding at the cut is closed"
        );
    }

    #[tokio::test]
    async fn cut_holds_new_connections_and_heal_forwards_them() {
        let proxy = Proxy::start(echo_server().await);
        proxy.cut();
        let mut held = TcpStream::connect(proxy.addr())
            .await
            .expect("accepted while cut (held, not refused)");
        assert_eq!(
            round_trip(&mut held, b"ping").await,
            None,
            "nothing comes back"
        );
        assert_eq!(proxy.forwarding(), 0);
        proxy.heal();
        assert!(!proxy.is_cut());
        let echoed = read_exact_within(&mut held, 4, Duration::from_secs(2)).await;
        assert_eq!(
            echoed.as_deref(),
            Some(&b"ping"[..]),
            "buffered bytes flow after heal"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut fresh, b"again").await.is_some());
    }

    #[tokio::test]
    async fn cut_from_blocks_only_matching_sources() {
        let proxy = Proxy::start(echo_server().await);
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut a, b"1").await.is_some());
        assert!(round_trip(&mut b, b"2").await.is_some());
        let blocked = Arc::new(Mutex::new(a.local_addr().unwrap().port()));
        let port = blocked.clone();
        proxy.cut_from(move |source| source.port() == *port.lock().unwrap());
        assert!(closed(&mut a).await, "the matching connection is closed");
        assert!(
            round_trip(&mut b, b"3").await.is_some(),
            "the other one flows"
        );
        // A new connection from a blocked source: bind first to know its port.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        *blocked.lock().unwrap() = socket.local_addr().unwrap().port();
        let mut c = socket.connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut c, b"4").await,
            None,
            "a new matching one is held"
        );
        assert!(round_trip(&mut b, b"5").await.is_some());
        proxy.heal();
        let echoed = read_exact_within(&mut c, 1, Duration::from_secs(2)).await;
        assert_eq!(echoed.as_deref(), Some(&b"4"[..]));
    }

    #[tokio::test]
    async fn drop_stops_the_proxy() {
        let proxy = Proxy::start(echo_server().await);
        let addr = proxy.addr();
        let mut a = TcpStream::connect(addr).await.unwrap();
        assert!(round_trip(&mut a, b"x").await.is_some());
        drop(proxy);
        assert!(closed(&mut a).await, "connections close with the proxy");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nothing listens any more"
        );
    }

    #[test]
    fn keeps_forwarding_while_the_test_thread_blocks() {
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy::start(target.local_addr().unwrap());
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = target.accept().unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        echo.join().unwrap();
    }
}

mod cluster_helpers {
    use crate::support::cluster::{owner_of_connection, parse_join_arg};

    #[test]
    fn join_argument_is_parsed_from_add_node_output() {
        let out = "Join a node with:\n  raftkine join 127.0.0.1:2380/abc123XYZ\n";
        assert_eq!(
            parse_join_arg(out).as_deref(),
            Some("127.0.0.1:2380/abc123XYZ")
        );
        let path = "/usr/local/bin/raftkine join 10.0.0.1:41234/t0k-en_=";
        assert_eq!(
            parse_join_arg(path).as_deref(),
            Some("10.0.0.1:41234/t0k-en_=")
        );
        assert_eq!(parse_join_arg("raftkine join\n"), None);
        assert_eq!(parse_join_arg("raftkine join 127.0.0.1:2380\n"), None);
        assert_eq!(parse_join_arg("error: cluster has no leader\n"), None);
    }

    #[test]
    fn the_process_owning_a_connection_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let source = stream.local_addr().unwrap();
        let me = std::process::id();
        assert_eq!(owner_of_connection(source, port, &[0, 1, me]), Some(2));
        assert_eq!(owner_of_connection(source, port, &[0, 1]), None);
        assert_eq!(owner_of_connection(source, port + 1, &[me]), None);
    }

    #[test]
    fn only_the_process_holding_the_listening_socket_serves_a_port() {
        use crate::support::listening::{listeners_of, listens_on};
        let me = std::process::id();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(me, port));
        assert!(
            listeners_of(port).contains(&me.to_string()),
            "{}",
            listeners_of(port)
        );
        // A connected socket on the port is not a listener, and neither is another process.
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let source = stream.local_addr().unwrap().port();
        assert!(!listens_on(me, source));
        assert!(!listens_on(1, port));
        drop(listener);
        assert!(!listens_on(me, port));
        assert!(listeners_of(port).starts_with("no socket listens"));
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| crate::support::free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        assert!(
            ports.iter().all(|p| (20_000..32_000).contains(p)),
            "{ports:?}"
        );
        let first = ports[0];
        assert!(std::net::TcpListener::bind(("127.0.0.1", first)).is_ok());
    }

    #[test]
    fn a_hung_process_is_described_thread_by_thread() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Wait until the child is `sleep` and asleep, not still the forked test process.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let report = loop {
            let report =
                crate::support::diagnose::process_report(sleeper.id(), &dir.path().join("data"));
            if report.contains("\"sleep\" state S") || std::time::Instant::now() > deadline {
                break report;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(report.contains("State:"), "{report}");
        assert!(report.contains("\"sleep\" state S"), "{report}");
        assert!(report.contains("$ df -h"), "{report}");
    }
}

mod linearizability {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::support::linearizability::{
        check, Checker, Expect, Op, Operation, Out, Read, ViolationKind,
    };

    const K: &str = "k";

    fn put(client: usize, value: &str, call: u64, ret: u64) -> Operation {
        let out = Out::Put { revision: None };
        Operation::completed(client, K, call, ret, Op::Put(value.into()), out)
    }

    fn put_rev(client: usize, value: &str, call: u64, ret: u64, rev: i64) -> Operation {
        let out = Out::Put {
            revision: Some(rev),
        };
        Operation::completed(client, K, call, ret, Op::Put(value.into()), out)
    }

    fn put_unknown(client: usize, value: &str, call: u64) -> Operation {
        Operation::unknown(client, K, call, Op::Put(value.into()))
    }

    fn get(client: usize, seen: Option<&str>, call: u64, ret: u64) -> Operation {
        let read = seen.map(|v| Read {
            value: v.into(),
            mod_revision: None,
        });
        Operation::completed(client, K, call, ret, Op::Get, Out::Get(read))
    }

    fn get_rev(client: usize, seen: &str, rev: i64, call: u64, ret: u64) -> Operation {
        let read = Read {
            value: seen.into(),
            mod_revision: Some(rev),
        };
        Operation::completed(client, K, call, ret, Op::Get, Out::Get(Some(read)))
    }

    fn cas(client: usize, expect: Expect, new: &str, ok: bool, call: u64, ret: u64) -> Operation {
        let input = Op::Cas {
            expect,
            new: new.into(),
        };
        let out = Out::Cas {
            succeeded: ok,
            revision: None,
        };
        Operation::completed(client, K, call, ret, input, out)
    }

    fn delete(client: usize, deleted: bool, call: u64, ret: u64) -> Operation {
        let out = Out::Delete {
            deleted: Some(deleted),
        };
        Operation::completed(client, K, call, ret, Op::Delete, out)
    }

    fn value(v: &str) -> Expect {
        Expect::Value(v.into())
    }

    fn rejected(history: &[Operation]) -> String {
        let v = check(history).expect_err("history must be rejected");
        assert_eq!(v.kind, ViolationKind::NotLinearizable, "{v}");
        assert_eq!(v.key, K);
        v.explanation
    }

    #[test]
    fn sequential_history_is_accepted() {
        let h = [
            get(0, None, 0, 1),
            put(0, "a", 2, 3),
            get(1, Some("a"), 4, 5),
            delete(0, true, 6, 7),
            delete(1, false, 8, 9),
            get(0, None, 10, 11),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn concurrent_puts_and_gets_are_accepted() {
        // Two overlapping puts; overlapping reads may see either order, as long as they agree
        // with one order; a read after both returned sees the last one of that order.
        let h = [
            put(0, "a", 0, 100),
            put(1, "b", 10, 90),
            get(2, Some("b"), 20, 30),
            get(3, Some("a"), 40, 95),
            get(2, Some("a"), 110, 120),
        ];
        check(&h).unwrap();
        // A read overlapping a put may see the old value or the new one.
        let h = [
            put(0, "a", 0, 10),
            put(1, "b", 20, 60),
            get(2, Some("a"), 25, 30),
            get(3, Some("b"), 30, 40),
            get(2, Some("b"), 50, 55),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_outcome_puts_may_or_may_not_happen() {
        // It happened: seen later, even long after the client gave up on it.
        let h = [
            put(0, "a", 0, 10),
            put_unknown(1, "b", 20),
            get(2, Some("a"), 30, 40),
            get(2, Some("b"), 1_000, 1_010),
        ];
        check(&h).unwrap();
        // It did not happen.
        let h = [
            put(0, "a", 0, 10),
            put_unknown(1, "b", 20),
            get(2, Some("a"), 30, 40),
            get(2, Some("a"), 1_000, 1_010),
        ];
        check(&h).unwrap();
        // But it cannot take effect before it was called.
        let h = [get(2, Some("b"), 0, 10), put_unknown(1, "b", 20)];
        rejected(&h);
        // And once seen it cannot be undone by anything but a later write.
        let h = [
            put(0, "a", 0, 10),
            put_unknown(1, "b", 20),
            get(2, Some("b"), 30, 40),
            get(2, Some("a"), 50, 60),
        ];
        rejected(&h);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_rejected() {
        let h = [
            put(0, "a", 0, 10),
            put(0, "b", 20, 30),
            get(1, Some("a"), 40, 50),
        ];
        let why = rejected(&h);
        assert!(why.contains("Get") && why.contains("\"a\""), "{why}");
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        let h = [put(0, "a", 0, 10), get(1, None, 20, 30)];
        rejected(&h);
        // Also when the history goes on and other writes follow.
        let h = [
            put(0, "a", 0, 10),
            put(1, "b", 20, 30),
            get(1, Some("b"), 40, 50),
            put(2, "c", 60, 70),
            get(0, Some("b"), 80, 90),
        ];
        rejected(&h);
    }

    #[test]
    fn two_cas_succeeding_on_the_same_expected_value_are_rejected() {
        let h = [
            put(0, "a", 0, 10),
            cas(1, value("a"), "b", true, 20, 40),
            cas(2, value("a"), "c", true, 30, 50),
        ];
        let why = rejected(&h);
        assert!(why.contains("Cas"), "{why}");
        // The same by mod revision.
        let rev = |r| Expect::ModRevision(r);
        let h = [
            put_rev(0, "a", 0, 10, 5),
            cas(1, rev(5), "b", true, 20, 40),
            cas(2, rev(5), "c", true, 30, 50),
        ];
        rejected(&h);
        // One succeeding and one failing is fine, in either order.
        let h = [
            put_rev(0, "a", 0, 10, 5),
            cas(1, rev(5), "b", false, 20, 40),
            cas(2, rev(5), "c", true, 30, 50),
            get(0, Some("c"), 60, 70),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn cas_follows_etcd_semantics() {
        let h = [
            cas(0, value("a"), "x", false, 0, 1), // value compare on an absent key fails
            cas(0, Expect::ModRevision(0), "a", true, 2, 3), // mod revision 0: absent
            cas(0, value("a"), "b", true, 4, 5),
            cas(1, Expect::ModRevision(0), "z", false, 6, 7),
            get(1, Some("b"), 8, 9),
        ];
        check(&h).unwrap();
        // A failed cas cannot have failed if its compare held.
        let h = [put(0, "a", 0, 1), cas(0, value("a"), "b", false, 2, 3)];
        rejected(&h);
    }

    #[test]
    fn unknown_outcome_cas_may_or_may_not_happen() {
        let unknown_cas = Operation::unknown(
            1,
            K,
            20,
            Op::Cas {
                expect: value("a"),
                new: "b".into(),
            },
        );
        for seen in ["a", "b"] {
            let h = [
                put(0, "a", 0, 10),
                unknown_cas.clone(),
                get(2, Some(seen), 30, 40),
            ];
            check(&h).unwrap();
        }
    }

    #[test]
    fn revisions_are_checked_when_known() {
        let h = [
            put_rev(0, "a", 0, 10, 5),
            get_rev(1, "a", 5, 20, 30),
            put_rev(0, "b", 40, 50, 9),
            get_rev(1, "b", 9, 60, 70),
        ];
        check(&h).unwrap();
        let h = [put_rev(0, "a", 0, 10, 5), get_rev(1, "a", 4, 20, 30)];
        rejected(&h);
        // Revisions of one key increase along real time.
        let h = [put_rev(0, "a", 0, 10, 5), put_rev(1, "b", 20, 30, 3)];
        rejected(&h);
        // A read learns the revision of a write whose revision was unknown.
        let h = [
            put_unknown(0, "a", 0),
            get_rev(1, "a", 7, 20, 30),
            cas(2, Expect::ModRevision(7), "b", true, 40, 50),
        ];
        check(&h).unwrap();
        let h = [
            put_unknown(0, "a", 0),
            get_rev(1, "a", 7, 20, 30),
            cas(2, Expect::ModRevision(6), "b", true, 40, 50),
        ];
        rejected(&h);
    }

    #[test]
    fn reading_a_value_never_written_is_rejected() {
        let h = [put(0, "a", 0, 10), get(1, Some("zzz"), 20, 30)];
        let why = rejected(&h);
        assert!(why.contains("zzz"), "{why}");
    }

    #[test]
    fn keys_are_independent_and_the_failing_key_is_named() {
        let mut h = vec![
            Operation::completed(
                0,
                "x",
                0,
                10,
                Op::Put("1".into()),
                Out::Put { revision: None },
            ),
            Operation::completed(1, "y", 0, 10, Op::Get, Out::Get(None)),
        ];
        check(&h).unwrap();
        h.push(Operation::completed(
            1,
            "x",
            20,
            30,
            Op::Get,
            Out::Get(None),
        ));
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, "x");
        assert!(v.to_string().contains("\"x\""), "{v}");
    }

    #[test]
    fn malformed_and_oversized_histories_are_refused() {
        let v = check(&[put(0, "a", 10, 5)]).unwrap_err();
        assert_eq!(v.kind, ViolationKind::Invalid, "{v}");
        let wrong = Operation::completed(0, K, 0, 1, Op::Get, Out::Put { revision: None });
        assert_eq!(check(&[wrong]).unwrap_err().kind, ViolationKind::Invalid);
        let small = Checker {
            max_ops_per_key: 3,
            ..Checker::default()
        };
        let h: Vec<Operation> = (0..4).map(|i| get(0, None, i * 10, i * 10 + 1)).collect();
        let v = small.check(&h).unwrap_err();
        assert_eq!(v.kind, ViolationKind::TooLarge, "{v}");
        assert!(v.explanation.contains("limit of 3"), "{v}");
    }

    #[test]
    fn search_is_bounded_by_steps() {
        // Many concurrent writes and a read seeing a value never written: the search must try
        // many orders before it can say no.
        let mut h: Vec<Operation> = (0..14).map(|i| put(i, &format!("v{i}"), 0, 100)).collect();
        h.push(get(99, Some("nope"), 200, 300));
        let tiny = Checker {
            max_steps_per_key: 50,
            ..Checker::default()
        };
        assert_eq!(tiny.check(&h).unwrap_err().kind, ViolationKind::TooLarge);
        assert_eq!(check(&h).unwrap_err().kind, ViolationKind::NotLinearizable);
    }

    // -- Random histories -----------------------------------------------------------------

    /// A sequential register per key with global revisions, as etcd has.
    struct Simulation {
        rng: StdRng,
        keys: Vec<String>,
        state: HashMap<String, (String, i64)>,
        revision: i64,
        free_at: Vec<u64>,
        now: u64,
        next_value: usize,
    }

    impl Simulation {
        fn new(seed: u64, keys: usize, clients: usize) -> Self {
            Simulation {
                rng: StdRng::seed_from_u64(seed),
                keys: (0..keys).map(|k| format!("key{k}")).collect(),
                state: HashMap::new(),
                revision: 1,
                free_at: vec![0; clients],
                now: 0,
                next_value: 0,
            }
        }

        /// `n` operations, each linearized at its own instant inside [call, ret], clients
        /// doing one operation at a time; `unknown` is the share of writes answered by an
        /// error (half of which took effect).
        fn history(&mut self, n: usize, unknown: f64) -> Vec<Operation> {
            (0..n).map(|_| self.operation(unknown)).collect()
        }

        fn operation(&mut self, unknown: f64) -> Operation {
            self.now += self.rng.gen_range(1..40);
            let client = self.free_client();
            let earliest = self.free_at[client] + 1;
            let call = self
                .rng
                .gen_range(earliest.max(self.now.saturating_sub(400))..=self.now);
            let ret = self.now + self.rng.gen_range(0..400);
            self.free_at[client] = ret;
            let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
            let input = self.input(&key);
            if !matches!(input, Op::Get) && self.rng.gen_bool(unknown) {
                if self.rng.gen_bool(0.5) {
                    self.apply(&key, &input);
                }
                return Operation::unknown(client, &key, call, input);
            }
            let output = self.apply(&key, &input);
            Operation::completed(client, &key, call, ret, input, output)
        }

        /// A client that is not busy now (time moves on until one is).
        fn free_client(&mut self) -> usize {
            loop {
                let free: Vec<usize> = (0..self.free_at.len())
                    .filter(|&c| self.free_at[c] < self.now)
                    .collect();
                if !free.is_empty() {
                    return free[self.rng.gen_range(0..free.len())];
                }
                self.now = *self.free_at.iter().min().unwrap() + 1;
            }
        }

        fn input(&mut self, key: &str) -> Op {
            self.next_value += 1;
            let new = format!("v{}", self.next_value);
            let current = self.state.get(key).cloned();
            match self.rng.gen_range(0..100) {
                0..=34 => Op::Put(new),
                35..=69 => Op::Get,
                70..=74 => Op::Delete,
                _ => {
                    let hit = self.rng.gen_bool(0.6);
                    let expect = match (self.rng.gen_bool(0.5), current) {
                        (true, Some((_, rev))) if hit => Expect::ModRevision(rev),
                        (true, _) => Expect::ModRevision(if hit { 0 } else { 1 }),
                        (false, Some((v, _))) if hit => Expect::Value(v),
                        (false, _) => Expect::Value("never".into()),
                    };
                    Op::Cas { expect, new }
                }
            }
        }

        fn apply(&mut self, key: &str, input: &Op) -> Out {
            let current = self.state.get(key).cloned();
            match input {
                Op::Put(v) => Out::Put {
                    revision: Some(self.write(key, v)),
                },
                Op::Get => Out::Get(current.map(|(value, rev)| Read {
                    value,
                    mod_revision: Some(rev),
                })),
                Op::Delete => {
                    let deleted = self.state.remove(key).is_some();
                    if deleted {
                        self.revision += 1;
                    }
                    Out::Delete {
                        deleted: Some(deleted),
                    }
                }
                Op::Cas { expect, new } => {
                    let holds = match (expect, &current) {
                        (Expect::ModRevision(r), Some((_, rev))) => r == rev,
                        (Expect::ModRevision(r), None) => *r == 0,
                        (Expect::Value(v), Some((value, _))) => v == value,
                        (Expect::Value(_), None) => false,
                    };
                    let revision = holds.then(|| self.write(key, new));
                    Out::Cas {
                        succeeded: holds,
                        revision,
                    }
                }
            }
        }

        fn write(&mut self, key: &str, value: &str) -> i64 {
            self.revision += 1;
            self.state
                .insert(key.to_string(), (value.to_string(), self.revision));
            self.revision
        }
    }

    #[test]
    fn random_linearizable_history_is_accepted_quickly() {
        for seed in 0..5 {
            let history = Simulation::new(seed, 20, 10).history(2_000, 0.03);
            let started = Instant::now();
            let result = check(&history);
            let took = started.elapsed();
            assert!(result.is_ok(), "seed {seed}: {}", result.unwrap_err());
            eprintln!(
                "seed {seed}: {} operations checked in {took:?}",
                history.len()
            );
            assert!(
                took < Duration::from_millis(500),
                "seed {seed}: 2,000 operations took {took:?}"
            );
        }
    }

    #[test]
    fn random_history_on_one_hot_key_is_accepted_quickly() {
        let history = Simulation::new(7, 1, 10).history(1_000, 0.05);
        let started = Instant::now();
        check(&history).unwrap();
        let took = started.elapsed();
        eprintln!("1,000 operations on one key checked in {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "1,000 ops on one key took {took:?}"
        );
    }

    /// The value an operation writes.
    fn written(op: &Operation) -> Option<&String> {
        match &op.input {
            Op::Put(v) | Op::Cas { new: v, .. } => Some(v),
            _ => None,
        }
    }

    #[test]
    fn random_history_with_a_corrupted_read_is_rejected() {
        for seed in 0..5 {
            let mut history = Simulation::new(seed, 20, 10).history(2_000, 0.03);
            // Make one read return a value of its key that was overwritten, for sure, before
            // the read was called: written by a put that returned before the call of the
            // (completed) write of the value really read, which returned before the read.
            let target = (history.len() / 2..history.len()).find_map(|i| {
                let read = &history[i];
                let Out::Get(Some(seen)) = &read.output else {
                    return None;
                };
                let writer = history.iter().find(|w| written(w) == Some(&seen.value))?;
                if writer.is_unknown() || writer.ret? >= read.call {
                    return None;
                }
                let older = history.iter().find(|w| {
                    w.key == read.key
                        && matches!(w.input, Op::Put(_))
                        && w.ret.is_some_and(|ret| ret < writer.call)
                })?;
                Some((i, written(older)?.clone()))
            });
            let (i, older) = target.expect("some read to corrupt");
            history[i].output = Out::Get(Some(Read {
                value: older,
                mod_revision: None,
            }));
            let v = check(&history).expect_err("a stale read must be found");
            assert_eq!(v.kind, ViolationKind::NotLinearizable, "seed {seed}: {v}");
            assert_eq!(v.key, history[i].key);
        }
    }
}
