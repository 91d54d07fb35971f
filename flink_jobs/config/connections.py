"""The job's connections to Kafka and Redis, from its settings: the client options of each kind of
client, and a check at start that fails naming the setting to fix.

Kafka is reached by two kinds of client: the Java one in the Flink connector (sources, sinks, the
gate's follower), shaded inside the connector jar, and kafka-python in the tools (publish,
status, serve, the demo). Both get the same security settings from here, so a secured cluster
needs them said once: ``kafka.security_protocol``, ``kafka.sasl_*``, ``kafka.ssl_*``.
``kafka.properties`` still goes to the Java clients last, for anything not covered.

Secrets (``kafka.sasl_password``, ``redis.password``) come from ``SEGMENTS_*`` variables or
from files named by ``SEGMENTS_*_FILE`` (``loading``), and are shown as *** wherever settings
are printed.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from typing import Any

from .sections import Config, KafkaConfig
from .settings import mask_url

# The connector jar relocates the Kafka client (org.apache.kafka -> this prefix), so the JAAS
# configuration must name the relocated login modules.
SHADED = "org.apache.flink.kafka.shaded."
# The Java clients read the SASL password from this variable of their JVM's environment, through
# Kafka's EnvVarConfigProvider: the properties (in the job's plan, its SQL and the web UI) hold a
# reference, never the secret. The job sets it for a local run; a cluster's JobManager and
# TaskManagers need it in their environment (deploy/kubernetes: the pods' env from a Secret).
PASSWORD_ENV = "SEGMENTS_KAFKA_SASL_PASSWORD"
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_kafka_properties(kafka: KafkaConfig) -> dict[str, str]:
    """Properties of the Java Kafka clients (the connector's, relocated): security first, then
    ``kafka.properties`` over them."""
    props = {"security.protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        module = SHADED + _LOGIN_MODULES[kafka.sasl_mechanism]
        props["config.providers"] = "env"
        props["config.providers.env.class"] = SHADED + "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
        props["sasl.mechanism"] = kafka.sasl_mechanism
        props["sasl.jaas.config"] = (
            f"{module} required username={_jaas_quote(kafka.sasl_username)} password=\"${{env:{PASSWORD_ENV}}}\";"
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        if kafka.ssl_ca_file:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = kafka.ssl_ca_file
        if not kafka.ssl_check_hostname:
            props["ssl.endpoint.identification.algorithm"] = ""
    props.update(kafka.properties)
    return props


def kafka_python_options(kafka: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments of kafka-python's clients (``KafkaConsumer``, ``KafkaProducer``,
    ``KafkaAdminClient``)."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_check_hostname"] = kafka.ssl_check_hostname
        if kafka.ssl_ca_file:
            options["ssl_cafile"] = kafka.ssl_ca_file
    return options


def check_settings(config: Config) -> None:
    """Security settings that are wrong together (no connection made); each message names one."""
    kafka, redis = config.kafka, config.redis

    # A JAAS configuration given as is in kafka.properties (for the Java clients) stands in for
    # the user and password.
    if kafka.security_protocol.startswith("SASL_") and "sasl.jaas.config" not in kafka.properties:
        if not kafka.sasl_username:
            raise config.error("kafka.sasl_username", f"kafka.security_protocol is {kafka.security_protocol}: name the SASL user")
        if not kafka.sasl_password:
            raise config.error(
                "kafka.sasl_password",
                f"kafka.security_protocol is {kafka.security_protocol}: give the password in SEGMENTS_KAFKA_SASL_PASSWORD, "
                "or a file holding it in SEGMENTS_KAFKA_SASL_PASSWORD_FILE",
            )
    if kafka.security_protocol not in ("SSL", "SASL_SSL") and kafka.ssl_ca_file:
        raise config.error("kafka.ssl_ca_file", f"set, but kafka.security_protocol is {kafka.security_protocol}; use SASL_SSL or SSL for TLS")
    if bool(redis.tls_cert_file) != bool(redis.tls_key_file):
        name = "redis.tls_key_file" if redis.tls_cert_file else "redis.tls_cert_file"
        raise config.error(name, "a client certificate needs both redis.tls_cert_file and redis.tls_key_file")
    if not redis.url.startswith("rediss://"):
        for name in ("redis.tls_ca_file", "redis.tls_cert_file"):
            if getattr(redis, name.split(".")[1]):
                raise config.error(name, f"set, but redis.url {mask_url(redis.url)} is not TLS; write rediss://host:port/db")


def _host_port(url: str) -> str:
    match = re.match(r"^[a-z]+://(?:[^@/]*@)?([^/?]+)", url)
    return match.group(1) if match else url


def check_redis(config: Config, timeout: float = 10.0) -> None:
    """Connect and PING as the job will; ``ConfigError`` naming the setting behind a failure."""
    import redis as redis_py

    settings = config.redis
    where = _host_port(settings.url)
    client = redis_py.Redis.from_url(
        settings.url, socket_timeout=timeout, socket_connect_timeout=timeout, **settings.connection_options()
    )

    try:
        client.ping()
    except redis_py.exceptions.AuthenticationError as exc:
        user = settings.username or "the URL's user, or default"
        raise config.error("redis.password", f"Redis at {where} refused user {user!r}: {exc}; check redis.password and redis.username") from exc
    except redis_py.exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            raise config.error("redis.username", f"Redis at {where}: {exc}; set redis.username and redis.password for an ACL user") from exc
        raise
    except (redis_py.exceptions.ConnectionError, OSError) as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        text = f"{exc}"
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            raise config.error(
                "redis.tls_ca_file",
                f"the certificate of Redis at {where} is not trusted ({getattr(cause, 'verify_message', text)}); "
                "name the CA that signed it",
            ) from exc
        if isinstance(cause, ssl.SSLError) or "SSL" in text or "record layer" in text:
            raise config.error("redis.url", f"TLS with Redis at {where} failed ({text}); is it rediss:// on a TLS port?") from exc
        if "Connection reset" in text or "Connection closed" in text:
            raise config.error("redis.url", f"Redis at {where} closed the connection ({text}): a TLS port needs rediss://") from exc
        raise config.error("redis.url", f"cannot reach Redis at {where}: {text}") from exc
    finally:
        client.close()


def check_kafka(config: Config, timeout: float = 15.0) -> None:
    """Fetch the cluster's metadata as the job will; ``ConfigError`` naming the setting behind a
    failure. kafka-python itself only says it could not bootstrap: a TLS handshake first, and its
    log, tell an untrusted certificate and a refused login from an unreachable broker."""
    from kafka import KafkaAdminClient
    from kafka import errors as kafka_errors

    kafka = config.kafka

    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        _check_tls(config)
    # kafka-python logs a refused login and raises "Unable to bootstrap": the log tells them apart.
    seen = _Collect()
    logger = logging.getLogger("kafka")
    logger.addHandler(seen)
    try:
        admin = KafkaAdminClient(
            **kafka_python_options(kafka), request_timeout_ms=int(timeout * 1000), client_id="segments-check"
        )
    except kafka_errors.KafkaError as exc:
        refused = isinstance(exc, kafka_errors.SaslAuthenticationFailedError) or any(
            "SaslAuthenticationFailed" in m or "Authentication failed" in m for m in seen.messages
        )
        if refused:
            raise config.error(
                "kafka.sasl_password",
                f"the brokers at {kafka.bootstrap} refused user {kafka.sasl_username!r} ({kafka.sasl_mechanism}); "
                "check kafka.sasl_password, kafka.sasl_username and kafka.sasl_mechanism",
            ) from exc
        # A broker that refuses a login answers, then closes the connection (after its
        # connection.failed.authentication.delay.ms); kafka-python drops an answer that arrives
        # with the close and logs only the disconnection. TLS worked above: for SASL, the likely cause.
        if kafka.security_protocol.startswith("SASL_") and any("socket disconnected" in m for m in seen.messages):
            raise config.error(
                "kafka.sasl_password",
                f"the brokers at {kafka.bootstrap} closed the connection during the login of user "
                f"{kafka.sasl_username!r} ({kafka.sasl_mechanism}), as they do when they refuse it; check "
                "kafka.sasl_password, kafka.sasl_username and kafka.sasl_mechanism (or kafka.security_protocol, "
                "if these brokers do not take SASL on this port)",
            ) from exc
        raise config.error("kafka.bootstrap", f"no broker answered at {kafka.bootstrap} with {kafka.security_protocol} ({exc})") from exc
    else:
        admin.close()
    finally:
        logger.removeHandler(seen)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _check_tls(config: Config) -> None:
    """A TLS handshake with the first broker, to tell an untrusted certificate from the rest
    (kafka-python only logs it and says no broker is available)."""
    kafka = config.kafka
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    context = ssl.create_default_context(cafile=kafka.ssl_ca_file or None)
    context.check_hostname = kafka.ssl_check_hostname
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host.strip("[]")):
                pass
    except ssl.SSLCertVerificationError as exc:
        name = "kafka.ssl_check_hostname" if "match" in str(exc.verify_message) else "kafka.ssl_ca_file"
        raise config.error(name, f"the certificate of the broker {host}:{port} is not trusted ({exc.verify_message}); name the CA that signed it") from exc
    except ssl.SSLError as exc:
        raise config.error("kafka.security_protocol", f"TLS with the broker {host}:{port} failed ({exc.reason}); is that a TLS listener?") from exc
    except OSError as exc:
        raise config.error("kafka.bootstrap", f"cannot reach the broker {host}:{port}: {exc}") from exc


def check_connections(config: Config) -> None:
    """The settings together, then Kafka and Redis reached as the job will reach them."""
    check_settings(config)
    check_kafka(config)
    check_redis(config)
