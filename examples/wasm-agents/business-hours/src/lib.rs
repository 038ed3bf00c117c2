//! `business-hours`: denies `NewConnection` events outside the hours of the day given in
//! its config, in UTC: `{start_hour: 8, end_hour: 18}` lets connections in from 08:00 to
//! 17:59. A window that wraps midnight (`{start_hour: 22, end_hour: 6}`) works too, and
//! `start_hour == end_hour` means always open. Time comes from the host (`now`).

use clpe_agent_sdk::serde_json::Value;
use clpe_agent_sdk::{Agent, EventType, Input, Reply, export_agent};

struct BusinessHours {
    start: u8,
    end: u8,
}

fn hour(config: &Value, key: &str) -> Result<u8, String> {
    match config.get(key).and_then(Value::as_u64) {
        Some(h) if h <= 24 => Ok(h as u8 % 24),
        _ => Err(format!(
            "config `{key}` must be an hour of the day, 0 to 24"
        )),
    }
}

impl Agent for BusinessHours {
    fn new(config: Value) -> Result<Self, String> {
        Ok(BusinessHours {
            start: hour(&config, "start_hour")?,
            end: hour(&config, "end_hour")?,
        })
    }

    fn decide<'a>(&mut self, input: &Input<'a>) -> Reply<'a> {
        if input.event.kind != EventType::NewConnection {
            return Reply::cont();
        }
        let h = input.utc_hour();
        let open = match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => self.start <= h && h < self.end,
            std::cmp::Ordering::Greater => h >= self.start || h < self.end,
        };
        if open {
            Reply::cont()
        } else {
            Reply::deny(format!(
                "outside business hours: open {:02}:00 to {:02}:00 UTC, now {:02}:{:02} UTC",
                self.start,
                self.end,
                h,
                input.utc_minute_of_day() % 60
            ))
            .matched_by(format!("/{}", input.agent))
        }
    }
}

export_agent!(BusinessHours);
