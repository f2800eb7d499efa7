"""A client generated from the server's /openapi.json runs the seed pages' examples against it.

    .setup/openapi-venv/bin/python tests/support/openapi_roundtrip.py \
        --spec openapi.json --base http://127.0.0.1:PORT --key SECRET --work DIR

1. The document is validated as OpenAPI 3.1 (openapi-spec-validator).
2. openapi-python-client generates a Python client from it, failing on any warning (an operation
   or a schema it could not turn into code).
3. The seed pages' examples (AgentHuman's links and start-session, bitHuman's validate, "Generate
   and poll", get, update, speak and add-context, Ojin's connect, VideoSDK's deployment sessions)
   and this server's own routes are called through the generated functions and models only.
4. Every answer round-trips: the generated model parsed from the body, written back with
   `to_dict()`, equals the body, and no object carries a field the document does not declare.

Prints one line per call; exits non-zero at the first failure.
"""

import argparse
import importlib
import json
import pathlib
import subprocess
import sys
import time


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def undeclared(value, where="body"):
    """The paths of fields the generated models kept as additional properties (undeclared)."""
    found = []
    extra = getattr(value, "additional_properties", None)
    if extra:
        found.append(f"{where}: {sorted(extra)}")
    fields = getattr(type(value), "__attrs_attrs__", None)
    if fields is not None:
        for field in fields:
            if field.name != "additional_properties":
                found += undeclared(getattr(value, field.name), f"{where}.{field.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += undeclared(item, f"{where}[{i}]")
    return found


def generate(spec, work):
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    document, _ = read_from_filename(str(spec))
    validate(document)
    if not document.get("openapi", "").startswith("3.1"):
        fail(f"the document is OpenAPI {document.get('openapi')}, not 3.1")
    print(f"ok: {spec.name} is valid OpenAPI {document['openapi']}", flush=True)
    config = work / "generator.yaml"
    # The generator turns only JSON, forms and octet-stream into code: SDP and images are bytes to it
    # (the generated calls still send and expect the document's own content types).
    config.write_text(
        "post_hooks: []\n"
        "project_name_override: avs_client\n"
        "package_name_override: avs_client\n"
        "content_type_overrides:\n"
        "  application/sdp: application/octet-stream\n"
        "  application/trickle-ice-sdpfrag: application/octet-stream\n"
        "  image/jpeg: application/octet-stream\n")
    out = work / "avs_client"
    generator = pathlib.Path(sys.executable).parent / "openapi-python-client"
    run = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--meta", "none", "--config", str(config),
         "--output-path", str(out), "--overwrite", "--fail-on-warning"],
        capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"openapi-python-client refused the document:\n{run.stdout}\n{run.stderr}")
    print("ok: client generated", flush=True)
    sys.path.insert(0, str(work))
    return document


class Calls:
    """The generated package: operations by operation id, models by schema name."""

    def __init__(self, base, key):
        import avs_client

        self.client_module = importlib.import_module("avs_client.client")
        self.models = importlib.import_module("avs_client.models")
        self.operations = {}
        root = pathlib.Path(avs_client.__file__).parent / "api"
        for path in root.glob("*/*.py"):
            if path.stem != "__init__":
                name = f"avs_client.api.{path.parent.name}.{path.stem}"
                self.operations[path.stem] = importlib.import_module(name)
        self.keyed = self.client_module.Client(
            base_url=base, headers={"x-api-key": key}, raise_on_unexpected_status=True, timeout=None)
        self.public = self.client_module.Client(
            base_url=base, raise_on_unexpected_status=True, timeout=None)

    def model(self, name):
        return getattr(self.models, name)

    def __call__(self, operation, expect, public=False, **arguments):
        if operation not in self.operations:
            fail(f"the generated client has no operation `{operation}`")
        client = self.public if public else self.keyed
        response = self.operations[operation].sync_detailed(client=client, **arguments)
        if response.status_code != expect:
            fail(f"{operation}: status {response.status_code} (wanted {expect}): {response.content[:300]!r}")
        parsed = response.parsed
        if parsed is None:
            fail(f"{operation}: the generated client did not parse the {expect} answer")
        body = json.loads(response.content)
        written = parsed.to_dict()
        if written != body:
            fail(f"{operation}: the body does not round-trip through {type(parsed).__name__}:\n"
                 f"  body:    {json.dumps(body, sort_keys=True)}\n"
                 f"  written: {json.dumps(written, sort_keys=True)}")
        extra = undeclared(parsed)
        if extra:
            fail(f"{operation}: fields the document does not declare: {extra}")
        print(f"ok: {operation} -> {expect} {type(parsed).__name__}", flush=True)
        return parsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, type=pathlib.Path)
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--work", required=True, type=pathlib.Path)
    args = parser.parse_args()
    generate(args.spec, args.work)
    call = Calls(args.base, args.key)
    m = call.model

    # Operations.
    call("healthz", 200, public=True)
    call("readyz", 200, public=True)

    # bitHuman (002): validate, then "Generate and poll" with only a prompt.
    assert call("validate", 200).valid is True
    started = call("generate_agent", 200, body=m("GenerateAgentRequest")(prompt="You are a friendly assistant"))
    agent_id = started.agent_id
    deadline = time.monotonic() + 180
    while True:
        agent = call("agent_status", 200, agent_id=agent_id).data
        if agent.status in ("ready", "failed"):
            break
        if time.monotonic() > deadline:
            fail(f"generation did not finish: {agent.status}")
        time.sleep(0.5)
    if agent.status != "ready":
        fail(f"generation failed: {agent.error_message}")
    call("get_agent", 200, code=agent_id)
    call("list_agents", 200)
    update = m("UpdateAgentRequest")(system_prompt="You are a helpful assistant.", allowed_origins=["*"])
    assert call("update_agent", 200, code=agent_id, body=update).updated is True
    missing = call("get_agent", 404, code="agnt_does_not_exist")
    assert missing.error_code == "AGENT_NOT_FOUND" and missing.code == "AGENT_NOT_FOUND", missing
    quiet = call("speak", 404, code=agent_id, body=m("SpeakRequest")(message="Hello"))
    assert quiet.error_code == "NO_ACTIVE_ROOMS", quiet

    # AgentHuman (001, 000): a link, then a session started with it (no key).
    link = call("create_link", 200, body=m("CreateLinkRequest")(
        agent_id=agent_id, name="Support Agent Link", use_limit=10)).link
    call("get_link", 200, id=link.link_id)
    call("list_links", 200)
    access = call("start_session_with_link", 200, public=True,
                  body=m("LinkStartRequest")(link_id=link.link_id, aspect_ratio="4:3"))

    # bitHuman again, now that a session is live.
    spoken = call("speak", 200, code=agent_id, body=m("SpeakRequest")(message="Hello! Welcome to our demo."))
    assert spoken.delivered_to_rooms == 1, spoken
    context = m("AddContextRequest")(context="The customer is a premium member.")
    call("add_context", 200, code=agent_id, body=context)

    # This server's sessions.
    call("get_session", 200, id=access.session_id)
    call("list_sessions", 200, status="live")
    call("session_token", 200, id=access.session_id)
    stopped = call("stop_session", 200, id=access.session_id).data
    assert stopped.status == "stopped", stopped
    own = call("create_session", 200, body=m("CreateSessionRequest")(agent_id=agent_id, aspect_ratio="1:1"))
    call("stop_session", 200, id=own.session_id)

    # Ojin (003): public connect, allowed for any origin since the update above.
    connected = call("connect", 200, public=True,
                     body=m("ConnectRequest")(agent_id=agent_id, client_user_ref="user-123"))
    call("stop_session", 200, id=connected.session_id)

    # VideoSDK (004): a deployment session at revision v2 (the update made it), then its end.
    request = m("DeploymentStartRequest")(
        deployment_id=agent_id, tag="v2",
        env=m("DeploymentStartRequestEnvType0").from_dict({"LANGUAGE": "en"}),
        meta_data=m("DeploymentStartRequestMetaDataType0").from_dict({"customer": "c-42"}))
    queued = call("start_deployment_session", 200, body=request).data
    assert queued.status == "queued", queued
    ended = call("end_deployment_session", 200, body=m("DeploymentEndRequest")(session_id=queued.session_id))
    assert ended.data.end_reason == "stopped_by_api", ended

    # Account.
    call("get_account", 200)
    call("update_account", 200, body=m("UpdateAccountRequest")(webhook_url="https://hooks.example.com/avatar"))

    # Clean-up, and one more refusal in the error shape.
    call("delete_agent", 404, code="agnt_does_not_exist")
    call("revoke_link", 200, id=link.link_id)
    call("delete_agent", 200, code=agent_id)
    print("ok: every example round-tripped", flush=True)


if __name__ == "__main__":
    main()
