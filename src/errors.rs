//! Error text for users: an error's message with its causes, so the engine's, git's or the
//! network's reason reaches the user.

/// An error's message followed by those of its causes (`source()` chain) that it does not
/// already say, joined by `": "`.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts.iter().rev().fold(None, |cause, text| Some(Layer { text, cause: cause.map(Box::new) })).unwrap()
    }

    #[test]
    fn causes_follow_the_message_once() {
        assert_eq!(with_causes(&chain(&["request failed", "connect", "refused"])), "request failed: connect: refused");
        assert_eq!(
            with_causes(&chain(&["build failed: no such image", "no such image"])),
            "build failed: no such image"
        );
        assert_eq!(with_causes(&chain(&["alone"])), "alone");
    }
}
