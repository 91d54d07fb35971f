"""Security settings of Kafka and Redis: what each kind of client gets, secrets from files, and the
start-up errors that name the setting (no connection made here; the real endpoints are
tests/integration/test_secure_connections.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flink_jobs.config import PASSWORD_ENV, ConfigError, java_kafka_properties, kafka_python_options, load_config

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _config(*argv: str, **env: str):
    return load_config(list(argv), environ=env, stack_env=None)


def _sasl(ca: Path, *more: str) -> list[str]:
    return ["--set", "kafka.security_protocol=SASL_SSL", "--set", "kafka.sasl_username=segments",
            "--set", f"kafka.ssl_ca_file={ca}", *more]


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text(PEM)
    return path


def test_java_clients_get_a_reference_to_the_password_never_the_password(ca: Path):
    config = _config(*_sasl(ca), SEGMENTS_KAFKA_SASL_PASSWORD="pa\"ss")
    props = java_kafka_properties(config.kafka)
    assert "pa\"ss" not in repr(props)
    assert props["sasl.jaas.config"] == (
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="segments" password="${{env:{PASSWORD_ENV}}}";'
    )
    assert props["config.providers.env.class"].endswith("org.apache.kafka.common.config.provider.EnvVarConfigProvider")
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == str(ca)
    assert props["sasl.mechanism"] == "SCRAM-SHA-512" and props["security.protocol"] == "SASL_SSL"


def test_kafka_python_gets_the_same_settings_with_the_password(ca: Path):
    config = _config(*_sasl(ca, "--set", "kafka.ssl_check_hostname=false"), SEGMENTS_KAFKA_SASL_PASSWORD="pw")
    assert kafka_python_options(config.kafka) == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "segments",
        "sasl_plain_password": "pw",
        "ssl_cafile": str(ca),
        "ssl_check_hostname": False,
    }
    assert java_kafka_properties(config.kafka)["ssl.endpoint.identification.algorithm"] == ""


def test_plaintext_is_what_it_was():
    config = _config("--set", "kafka.properties=linger.ms=5")
    assert java_kafka_properties(config.kafka) == {"security.protocol": "PLAINTEXT", "linger.ms": "5"}
    assert kafka_python_options(config.kafka) == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}


def test_a_secret_comes_from_the_file_its_FILE_variable_names(tmp_path: Path, ca: Path):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")  # the line end an editor adds is not part of it
    config = _config(*_sasl(ca), SEGMENTS_KAFKA_SASL_PASSWORD_FILE=str(secret), SEGMENTS_REDIS_PASSWORD_FILE=str(secret))
    assert config.kafka.sasl_password == "from-a-file" and config.redis.password == "from-a-file"
    assert config.origin("kafka.sasl_password") == f"the file {secret} (environment variable SEGMENTS_KAFKA_SASL_PASSWORD_FILE)"
    # The variable itself wins over its _FILE.
    assert _config(*_sasl(ca), SEGMENTS_KAFKA_SASL_PASSWORD="direct", SEGMENTS_KAFKA_SASL_PASSWORD_FILE=str(secret)).kafka.sasl_password == "direct"
    with pytest.raises(ConfigError, match=r"^kafka.sasl_password: cannot read /nonexistent \(No such file or directory\)"):
        _config(*_sasl(ca), SEGMENTS_KAFKA_SASL_PASSWORD_FILE="/nonexistent")


def test_redis_connection_options_and_masked_urls(ca: Path):
    config = _config(
        "--set", "redis.url=rediss://:hunter2@cache:6380/0", "--set", "redis.username=segments",
        "--set", f"redis.tls_ca_file={ca}", SEGMENTS_REDIS_PASSWORD="pw",
    )
    assert config.redis.connection_options() == {"username": "segments", "password": "pw", "ssl_ca_certs": str(ca)}
    described = config.describe()
    assert "hunter2" not in described and "redis.url = rediss://:***@cache:6380/0" in described
    assert "redis.password = ***" in described and "pw" not in described.replace("password", "")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--set", "kafka.security_protocol=SASL_SSL", "--set", "kafka.sasl_username=u"], {},
         r"^kafka.sasl_password: kafka.security_protocol is SASL_SSL: give the password in SEGMENTS_KAFKA_SASL_PASSWORD"),
        (["--set", "kafka.security_protocol=SASL_SSL"], {"SEGMENTS_KAFKA_SASL_PASSWORD": "p"},
         r"^kafka.sasl_username: kafka.security_protocol is SASL_SSL: name the SASL user"),
        (["--set", "kafka.ssl_ca_file=CA"], {}, r"^kafka.ssl_ca_file: set, but kafka.security_protocol is PLAINTEXT"),
        (["--set", "redis.tls_ca_file=CA"], {}, r"^redis.tls_ca_file: set, but redis.url redis://localhost:6379/0 is not TLS"),
        (["--set", "redis.tls_cert_file=CA", "--set", "redis.url=rediss://h:1/0"], {},
         r"^redis.tls_key_file: a client certificate needs both"),
        (["--set", "kafka.ssl_ca_file=/nonexistent.pem"], {}, r"^kafka.ssl_ca_file: cannot read /nonexistent.pem"),
        (["--set", "redis.tls_ca_file=NOT_PEM", "--set", "redis.url=rediss://h:1/0"], {}, r"^redis.tls_ca_file: .* is not a PEM file"),
    ],
)
def test_security_settings_wrong_together_name_the_setting(tmp_path: Path, ca: Path, argv, env, message):
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01")
    argv = [a.replace("=CA", f"={ca}").replace("=NOT_PEM", f"={not_pem}") for a in argv]
    with pytest.raises(ConfigError, match=message):
        _config(*argv, **env)
