"""Demo data: two governments, their authorities, an IRCC and a communiqué citing it.

Usage: ``python -m tools.demo --registry URL --checkpoint URL --admin-token TOKEN`` against
running services (the local stack loads it by itself).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from typing import Any

import httpx

log = logging.getLogger(__name__)
NON_COMMERCIAL = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"


def _id(prefix: str) -> str:
    return f"DEMO-{prefix}-{uuid.uuid4().hex[:12].upper()}"


def _hdr(schema: str, ident: str, langs: list[str] | None = None) -> dict[str, Any]:
    return {"identifier": ident, "schema": schema, "languages": langs or ["en"]}


class _Api:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def call(self, method: str, url: str, token: str, **kw: Any) -> dict[str, Any]:
        resp = self.client.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {resp.status_code} {resp.text}")
        out: dict[str, Any] = resp.json()
        return out

    def user(self, creator: str, role: str, gov: str | None, **extra: Any) -> str:
        body = {
            "name": f"Demo {role} {gov or ''}".strip(),
            "role": role,
            "government": gov,
            "email": f"{role}@{gov or 'scbd'}.demo.example",
            **extra,
        }
        return str(self.call("POST", "/v1/users", creator, json=body)["token"])

    def publish(self, token: str, record: dict[str, Any]) -> str:
        schema, ident = record["header"]["schema"], record["header"]["identifier"]
        self.call("PUT", f"/v1/records/{schema}/{ident}", token, json=record)
        return str(self.call("POST", f"/v1/records/{schema}/{ident}/publish", token)["uid"])


def _provider_records(api: _Api, admin: str, pa: str) -> dict[str, str]:
    nfp: dict[str, Any] = {
        "header": _hdr("focalPoint", _id("NFP")),
        "government": {"identifier": "mx"},
        "firstName": "Lucía",
        "lastName": "Hernández",
        "type": ["ABS-FP"],
        "emails": ["nfp@mx.demo.example"],
    }
    cna: dict[str, Any] = {
        "header": _hdr("authority", _id("CNA"), ["es"]),
        "government": {"identifier": "mx"},
        "name": {"es": "Autoridad Nacional Competente"},
        "city": {"es": "Ciudad de México"},
        "country": {"identifier": "mx"},
        "phones": ["+52 55 0000 0000"],
        "emails": ["cna@mx.demo.example"],
        "responsibleForAll": True,
    }
    holder: dict[str, Any] = {
        "header": _hdr("contact", _id("CON")),
        "government": {"identifier": "mx"},
        "type": "organization",
        "organization": {"en": "BioLab GmbH"},
        "country": {"identifier": "de"},
        "emails": ["pic-holder@biolab.demo.example"],
    }
    out = {
        "nfp mx": api.publish(admin, nfp),
        "cna mx": api.publish(pa, cna),
        "pic holder": api.publish(pa, holder),
    }
    ircc: dict[str, Any] = {
        "header": _hdr("absPermit", _id("IRCC")),
        "government": {"identifier": "mx"},
        "absCNA": {"identifier": cna["header"]["identifier"]},
        "title": {"en": "Permit SEMARNAT/DEMO/2025-001"},
        "dateOfIssuance": "2025-03-01",
        "dateOfExpiry": "2030-03-01",
        "providersConfidential": True,
        "picGranted": True,
        "entitiesToWhomPICGranted": [{"identifier": holder["header"]["identifier"]}],
        "matEstablished": True,
        "subjectMatter": {"en": "Bacillus strains from Oaxaca soil"},
        "usages": [{"identifier": NON_COMMERCIAL}],
    }
    out["ircc"] = api.publish(pa, ircc)
    out["_ircc_identifier"] = ircc["header"]["identifier"]
    return out


def load_demo(registry_url: str, checkpoint_url: str, admin_token: str) -> dict[str, str]:
    """Publish the demo records and one CPC; returns the UIDs by name."""
    with (
        httpx.Client(base_url=registry_url, timeout=30) as reg,
        httpx.Client(base_url=checkpoint_url, timeout=30) as cp,
    ):
        api = _Api(reg)
        pa_mx = api.user(api.user(admin_token, "nfp", "mx"), "pa", "mx")
        pa_de = api.user(api.user(admin_token, "nfp", "de"), "pa", "de")
        out = _provider_records(api, admin_token, pa_mx)
        checkpoint: dict[str, Any] = {
            "header": _hdr("absCheckpoint", _id("CP")),
            "government": {"identifier": "de"},
            "name": {"en": "German Patent Office"},
            "informAllAuthorities": True,
        }
        de_cna: dict[str, Any] = {
            "header": _hdr("authority", _id("CNA"), ["en"]),
            "government": {"identifier": "de"},
            "name": {"en": "Federal Agency"},
            "city": {"en": "Bonn"},
            "country": {"identifier": "de"},
            "phones": ["+49 228 0000"],
            "emails": ["cna@de.demo.example"],
            "responsibleForAll": True,
        }
        out["cna de"] = api.publish(pa_de, de_cna)
        out["checkpoint de"] = api.publish(pa_de, checkpoint)
        operator = api.user(
            pa_de, "checkpoint", "de", checkpoint=checkpoint["header"]["identifier"]
        )
        cpc: dict[str, Any] = {
            "header": _hdr("absCheckpointCommunique", _id("CPC")),
            "government": {"identifier": "de"},
            "title": {"en": "Patent application 2025/1"},
            "absCheckpoints": [{"identifier": checkpoint["header"]["identifier"]}],
            "absIRCCs": [{"identifier": f"{out.pop('_ircc_identifier')}@1"}],
            "description": {"en": "Development of a commercial enzyme product."},
            "dateCollected": "2025-06-01",
        }
        out["cpc"] = _submit_cpc(cp, operator, cpc)
        return out


def _submit_cpc(cp: httpx.Client, token: str, cpc: dict[str, Any], tries: int = 50) -> str:
    """The checkpoint learns of the new checkpoint from Kafka, so retry a little."""
    for _ in range(tries):
        resp = cp.post(
            "/v1/communiques",
            json=cpc,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "demo"},
        )
        if resp.status_code in (200, 201):
            return str(resp.json()["uid"])
        if resp.status_code != 422:
            break
        time.sleep(0.2)
    raise RuntimeError(f"CPC refused: {resp.status_code} {resp.text}")


def main(argv: list[str] | None = None) -> int:
    """Load the demo data into running services."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="http://127.0.0.1:8101")
    parser.add_argument("--checkpoint", default="http://127.0.0.1:8102")
    parser.add_argument("--admin-token", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, uid in load_demo(args.registry, args.checkpoint, args.admin_token).items():
        log.info("%-14s %s", name, uid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
