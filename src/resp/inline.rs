//! Inline commands (`SET k v` typed into telnet): the line split into
//! arguments as Redis's `sdssplitargs` splits it.

use super::ProtocolError;

/// `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    match *b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline command line like Redis `sdssplitargs`.
pub(super) fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let n = line.len();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(i).copied();
            if in_dq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') => {
                        if let (Some(b'x'), Some(hi), Some(lo)) = (
                            line.get(i + 1),
                            hex_val(line.get(i + 2)),
                            hex_val(line.get(i + 3)),
                        ) {
                            cur.push(hi * 16 + lo);
                            i += 4;
                        } else if let Some(&e) = line.get(i + 1) {
                            cur.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 2;
                        } else {
                            // A trailing backslash: the quote is unterminated.
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                    }
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => {
                        cur.push(b);
                        i += 1;
                    }
                }
            } else if in_sq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        cur.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => {
                        cur.push(b);
                        i += 1;
                    }
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => {
                        in_dq = true;
                        i += 1;
                    }
                    Some(b'\'') => {
                        in_sq = true;
                        i += 1;
                    }
                    Some(b) => {
                        cur.push(b);
                        i += 1;
                    }
                }
            }
        }
        out.push(cur);
    }
}
