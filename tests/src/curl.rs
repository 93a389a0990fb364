//! Reading the curl commands `presence demo` prints, so a test can send exactly
//! what a reader would paste into a shell; and any printed command's words
//! ([`shell_words`]).
//!
//! Only what such commands use is understood: backslash-newline continuations,
//! single and double quotes, `-X`, `-H`, `-d`/`--data*`/`--json` and the URL.

use anyhow::{Result, bail};

/// One printed curl command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlCommand {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl CurlCommand {
    /// Parses the words of one command line starting at `curl`.
    pub fn parse(line: &str) -> Result<Self> {
        let Some(start) = line.find("curl ") else {
            bail!("no curl command in {line:?}");
        };
        let words = shell_words(&line[start..])?;
        let mut method = None;
        let mut url = None;
        let mut headers = Vec::new();
        let mut body = None;
        let mut args = words.into_iter().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-X" | "--request" => method = args.next(),
                "-H" | "--header" => {
                    if let Some((name, value)) =
                        args.next().as_deref().and_then(|h| h.split_once(':'))
                    {
                        headers.push((name.trim().to_owned(), value.trim().to_owned()));
                    }
                }
                "-d" | "--data" | "--data-raw" | "--data-binary" => body = args.next(),
                "--json" => {
                    headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
                    body = args.next();
                }
                "--url" => url = args.next(),
                other if other.starts_with("http://") || other.starts_with("https://") => {
                    url = Some(other.to_owned());
                }
                _ => {}
            }
        }
        let Some(url) = url else {
            bail!("curl command without a URL: {line:?}");
        };
        let uses_variables = url.contains('$')
            || body.as_deref().is_some_and(|b| b.contains('$'))
            || headers.iter().any(|(_, value)| value.contains('$'));
        if uses_variables {
            bail!("curl command relies on shell variables, it is not ready to paste: {line:?}");
        }
        let method =
            method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
        Ok(Self {
            method,
            url,
            headers,
            body,
        })
    }
}

/// Every curl command in `text`, continuation lines joined.
pub fn curl_commands(text: &str) -> Result<Vec<CurlCommand>> {
    logical_lines(text)
        .iter()
        .filter(|line| line.trim_start().starts_with("curl ") || line.contains("$ curl "))
        .map(|line| CurlCommand::parse(line))
        .collect()
}

/// Lines with `\`-newline continuations joined, as a shell reads them. A final
/// line still ending in `\` is incomplete and left out.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in crate::process::complete_lines(text) {
        match raw.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(raw);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// Splits a command line into words as a POSIX shell would (quotes and
/// backslashes; no expansions).
pub fn shell_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => bail!("unterminated ' in {line:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => bail!("unterminated \" in {line:?}"),
                        },
                        Some(c) => word.push(c),
                        None => bail!("unterminated \" in {line:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_multi_line_command_with_quotes() {
        let text = "Try it:\n  curl -s -X POST -H 'X-Api-Key: k1' \\\n    -H \"Content-Type: application/json\" \\\n    -d '{\"token\":\"T 1\"}' \\\n    'http://127.0.0.1:8080/presence/v1/ticket/enter'\nbye\n";
        let commands = curl_commands(text).unwrap();
        assert_eq!(
            commands,
            [CurlCommand {
                method: "POST".into(),
                url: "http://127.0.0.1:8080/presence/v1/ticket/enter".into(),
                headers: vec![
                    ("X-Api-Key".into(), "k1".into()),
                    ("Content-Type".into(), "application/json".into())
                ],
                body: Some("{\"token\":\"T 1\"}".into()),
            }]
        );
    }

    #[test]
    fn defaults_the_method_from_the_body() {
        let get =
            CurlCommand::parse("curl \"http://h/presence/v1/device?apikey=k&mac=x\"").unwrap();
        assert_eq!(get.method, "GET");
        assert_eq!(get.url, "http://h/presence/v1/device?apikey=k&mac=x");
        let post = CurlCommand::parse("curl --json '{}' http://h/x").unwrap();
        assert_eq!(
            (post.method.as_str(), post.body.as_deref()),
            ("POST", Some("{}"))
        );
    }

    #[test]
    fn refuses_what_is_not_ready_to_paste() {
        assert!(CurlCommand::parse("curl -H \"X-Api-Key: $KEY\" http://h/x").is_err());
        assert!(CurlCommand::parse("curl -d '{\"a\":1} http://h/x").is_err());
        assert!(CurlCommand::parse("curl -s").is_err());
    }

    #[test]
    fn an_unfinished_continuation_is_not_a_command_yet() {
        assert!(curl_commands("curl -X POST \\\n").unwrap().is_empty());
    }
}
