//! UDP request/response round trips, for the per-packet cost of the ruleset.
//!
//!   udp_rtt serve <port> <seconds>           echo datagrams until the time is up
//!   udp_rtt ping <src> <dst> <port> <count>  prints p50/p99 round trip in µs as JSON
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "serve" => {
            let sock = UdpSocket::bind(("::", args[2].parse::<u16>().expect("port")))?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let end = Instant::now() + Duration::from_secs(args[3].parse().expect("seconds"));
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    sock.send_to(&buf[..n], peer)?;
                }
            }
        }
        _ => {
            let sock = UdpSocket::bind((args[2].as_str(), 0))?;
            sock.connect((args[3].as_str(), args[4].parse::<u16>().expect("port")))?;
            sock.set_read_timeout(Some(Duration::from_secs(1)))?;
            let count: usize = args[5].parse().expect("count");
            let mut lat = Vec::with_capacity(count);
            let mut buf = [0u8; 64];
            for i in 0..count + 1000 {
                let t = Instant::now();
                sock.send(b"rtt-probe")?;
                sock.recv(&mut buf)?;
                if i >= 1000 {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            lat.sort_by(f64::total_cmp);
            let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
            println!(
                "{{\"count\":{count},\"p50_us\":{:.2},\"p99_us\":{:.2}}}",
                p(0.5),
                p(0.99)
            );
        }
    }
    Ok(())
}
