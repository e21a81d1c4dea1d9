//! One command over one connection to one instance's runtime API (unix socket or TCP): connect
//! within the connect timeout, write the single line, read the whole reply within the read
//! timeout. HAProxy closes a non-interactive connection after its reply.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use vesemir_core::ports::LbEndpoint;

use crate::command::Command;
use crate::config::HaproxyConfig;
use crate::error::HaproxyError;

/// Sends `command` to `instance` and returns its raw reply.
pub(crate) async fn send(
    instance: &LbEndpoint,
    command: &Command,
    config: &HaproxyConfig,
) -> Result<String, HaproxyError> {
    let line = command.line().ok_or_else(|| HaproxyError::UnsafeCommand { instance: instance.clone() })?;
    tracing::debug!(%instance, command = %command, "haproxy runtime API");
    match instance {
        LbEndpoint::Tcp { address, port } => {
            let stream =
                connect(instance, config.connect_timeout, TcpStream::connect((address.as_str(), *port)))
                    .await?;
            exchange(stream, instance, command, &line, config).await
        }
        LbEndpoint::Unix { socket } => {
            let stream = connect(instance, config.connect_timeout, UnixStream::connect(socket)).await?;
            exchange(stream, instance, command, &line, config).await
        }
    }
}

async fn connect<S>(
    instance: &LbEndpoint,
    after: Duration,
    connecting: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, HaproxyError> {
    match tokio::time::timeout(after, connecting).await {
        Err(_) => Err(HaproxyError::ConnectTimeout { instance: instance.clone(), after }),
        Ok(Err(source)) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(HaproxyError::SocketPermission { instance: instance.clone(), source })
        }
        Ok(Err(source)) => Err(HaproxyError::Connect { instance: instance.clone(), source }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    instance: &LbEndpoint,
    command: &Command,
    line: &str,
    config: &HaproxyConfig,
) -> Result<String, HaproxyError> {
    let io = |source| HaproxyError::Io { instance: instance.clone(), command: command.to_string(), source };
    let talk = async {
        stream.write_all(line.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut reply = Vec::new();
        // One byte more than the limit tells a reply at the limit from a larger one.
        (&mut stream).take(config.max_reply_bytes + 1).read_to_end(&mut reply).await.map_err(io)?;
        Ok(reply)
    };
    let reply =
        tokio::time::timeout(config.read_timeout, talk).await.map_err(|_| HaproxyError::ReadTimeout {
            instance: instance.clone(),
            command: command.to_string(),
            after: config.read_timeout,
        })??;
    if reply.len() as u64 > config.max_reply_bytes {
        return Err(HaproxyError::ReplyTooLarge {
            instance: instance.clone(),
            command: command.to_string(),
            limit: config.max_reply_bytes,
        });
    }
    String::from_utf8(reply).map_err(|_| HaproxyError::Malformed {
        instance: instance.clone(),
        command: command.to_string(),
        what: "the reply is not UTF-8".into(),
    })
}
