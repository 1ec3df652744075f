#!/usr/bin/env python3
"""check_catalog.py: an independent reader of a driver catalog (.cat) written by xtask.

Parses the catalog with asn1crypto (not with the Rust code that wrote it), recomputes every
member's digest from the package files with its own Authenticode PE hash, and checks the
attributes Windows and inf2cat put in a catalog. Exits 1 naming the first problem.

usage: check_catalog.py CATALOG PACKAGE_DIR FILE... [--signed]
  FILE...   the package files the catalog must list, no more and no fewer
  --signed  the catalog must also carry a signer and its certificate
"""

import hashlib
import os
import struct
import sys

from asn1crypto import algos, cms, core

OID_CTL = "1.3.6.1.4.1.311.10.1"
OID_CATALOG_LIST = "1.3.6.1.4.1.311.12.1.1"
OID_CATALOG_LIST_MEMBER2 = "1.3.6.1.4.1.311.12.1.3"
OID_NAMEVALUE = "1.3.6.1.4.1.311.12.2.1"
OID_MEMBERINFO2 = "1.3.6.1.4.1.311.12.2.3"
OID_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
OID_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
OID_CAB_DATA = "1.3.6.1.4.1.311.2.1.25"


class NameValue(core.Sequence):
    _fields = [("name", core.BMPString), ("flags", core.Integer), ("value", core.OctetString)]


class SubjectInterfacePackage(core.Choice):
    """CAT_MEMBERINFO2's value: which kind of file was hashed, as an empty context tag."""
    _alternatives = [
        ("pe_image", core.Null, {"implicit": 0}),
        ("cabinet", core.Null, {"implicit": 1}),
        ("flat", core.Null, {"implicit": 2}),
    ]


class MemberInfo2Values(core.SetOf):
    _child_spec = SubjectInterfacePackage


class NameValues(core.SetOf):
    _child_spec = NameValue


class MemberAttribute(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("values", core.Any)]
    _oid_pair = ("type", "values")


class MemberAttributes(core.SetOf):
    _child_spec = MemberAttribute


class TrustedSubject(core.Sequence):
    _fields = [("identifier", core.OctetString), ("attributes", MemberAttributes)]


class TrustedSubjects(core.SequenceOf):
    _child_spec = TrustedSubject


class Usages(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


class AlgorithmIdentifier(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class Extension(core.Sequence):
    _fields = [
        ("extn_id", core.ObjectIdentifier),
        ("critical", core.Boolean, {"default": False}),
        ("extn_value", core.OctetString),
    ]


class Extensions(core.SequenceOf):
    _child_spec = Extension


class CertificateTrustList(core.Sequence):
    _fields = [
        ("version", core.Integer, {"optional": True}),
        ("subject_usage", Usages),
        ("list_identifier", core.OctetString, {"optional": True}),
        ("sequence_number", core.Integer, {"optional": True}),
        ("this_update", core.UTCTime),
        ("next_update", core.UTCTime, {"optional": True}),
        ("subject_algorithm", AlgorithmIdentifier),
        ("trusted_subjects", TrustedSubjects, {"optional": True}),
        ("extensions", Extensions, {"explicit": 0, "optional": True}),
    ]


class SpcAttributeTypeAndOptionalValue(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("value", core.Any, {"optional": True})]


class SpcIndirectDataContent(core.Sequence):
    _fields = [("data", SpcAttributeTypeAndOptionalValue), ("message_digest", algos.DigestInfo)]


class IndirectDataValues(core.SetOf):
    _child_spec = SpcIndirectDataContent


# The value set of each member attribute, by the attribute's OID.
MemberAttribute._oid_specs = {
    OID_MEMBERINFO2: MemberInfo2Values,
    OID_NAMEVALUE: NameValues,
    OID_INDIRECT_DATA: IndirectDataValues,
}


class CatalogError(Exception):
    pass


def pe_authenticode_sha256(image):
    """The Authenticode PE image hash, written from the PE/COFF and Authenticode specs."""
    (pe_offset,) = struct.unpack_from("<I", image, 0x3C)
    if image[pe_offset:pe_offset + 4] != b"PE\0\0":
        raise CatalogError("not a PE image")
    optional = pe_offset + 24
    (magic,) = struct.unpack_from("<H", image, optional)
    directory = optional + {0x10B: 96, 0x20B: 112}[magic]
    checksum = optional + 64
    (count,) = struct.unpack_from("<I", image, directory - 4)
    certificate_entry = directory + 4 * 8
    table_offset, table_size = (0, 0)
    if count > 4:
        table_offset, table_size = struct.unpack_from("<II", image, certificate_entry)
    digest = hashlib.sha256()
    digest.update(image[:checksum])
    if count > 4:
        digest.update(image[checksum + 4:certificate_entry])
        end = table_offset if table_size else len(image)
        if table_size and table_offset + table_size != len(image):
            raise CatalogError("certificate table does not end the image")
        digest.update(image[certificate_entry + 8:end])
    else:
        digest.update(image[checksum + 4:])
    return digest.digest()


def strip_explicit_zero(raw):
    """The contents of a DER `[0]` constructed wrapper, or `raw` if it is not one."""
    if raw[0] != 0xA0:
        return raw
    if raw[1] < 0x80:
        header, length = 2, raw[1]
    else:
        count = raw[1] & 0x7F
        header, length = 2 + count, int.from_bytes(raw[2:2 + count], "big")
    if header + length != len(raw):
        raise CatalogError("the CTL's [0] wrapper length does not match its content")
    return raw[header:]


def name_value(raw):
    parsed = NameValue.load(raw)
    value = parsed["value"].native.decode("utf-16-le")
    if not value.endswith("\0"):
        raise CatalogError(f"attribute {parsed['name'].native} value is not NUL-terminated")
    return parsed["name"].native, parsed["flags"].native, value[:-1]


def check(catalog_path, directory, expected_files, signed):
    content_info = cms.ContentInfo.load(open(catalog_path, "rb").read())
    if content_info["content_type"].native != "signed_data":
        raise CatalogError("not a PKCS#7 SignedData")
    signed_data = content_info["content"]
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].dotted != OID_CTL:
        raise CatalogError(f"content type {encapsulated['content_type'].dotted}, not szOID_CTL")
    # The CTL is the content itself (PKCS#7 `[0] EXPLICIT ANY`), not an OCTET STRING; asn1crypto
    # may hand over the [0] wrapper with it, whose contents are then the CTL's DER.
    ctl = CertificateTrustList.load(strip_explicit_zero(encapsulated["content"].dump()))
    if [usage.dotted for usage in ctl["subject_usage"]] != [OID_CATALOG_LIST]:
        raise CatalogError("subject usage is not szOID_CATALOG_LIST")
    if ctl["subject_algorithm"]["algorithm"].dotted != OID_CATALOG_LIST_MEMBER2:
        raise CatalogError("members are not szOID_CATALOG_LIST_MEMBER2 (SHA-256)")
    inf_text = ""
    found = {}
    for subject in ctl["trusted_subjects"]:
        tag = subject["identifier"].native
        names, os_attrs, sips, digests = [], [], [], []
        for attribute in subject["attributes"]:
            kind = attribute["type"].dotted
            values = attribute["values"]
            if isinstance(values, core.Any):
                raise CatalogError(f"member {tag.hex()} has an unknown attribute {kind}")
            for value in values:
                raw = value.dump()
                if kind == OID_NAMEVALUE:
                    name, flags, text = name_value(raw)
                    if flags != 0x10010001:
                        raise CatalogError(f"attribute {name} flags {flags:#x}")
                    (names if name == "File" else os_attrs if name == "OSAttr" else []).append(text)
                elif kind == OID_MEMBERINFO2:
                    sips.append(value.name)
                elif kind == OID_INDIRECT_DATA:
                    indirect = SpcIndirectDataContent.load(raw)
                    algorithm = indirect["message_digest"]["digest_algorithm"]["algorithm"].native
                    if algorithm != "sha256":
                        raise CatalogError(f"member digest algorithm {algorithm}")
                    digests.append((indirect["data"]["type"].dotted,
                                    indirect["message_digest"]["digest"].native))
        if len(names) != 1 or len(digests) != 1 or len(sips) != 1 or len(os_attrs) != 1:
            raise CatalogError(f"member {tag.hex()} lacks File, OSAttr, MEMBERINFO2 or digest")
        name = names[0]
        data_type, digest = digests[0]
        contents = open(os.path.join(directory, name), "rb").read()
        if data_type == OID_PE_IMAGE_DATA:
            recomputed, expected_sip = pe_authenticode_sha256(contents), "pe_image"
        elif data_type == OID_CAB_DATA:
            recomputed, expected_sip = hashlib.sha256(contents).digest(), "flat"
        else:
            raise CatalogError(f"{name}: unknown data type {data_type}")
        if name.lower().endswith(".inf"):
            inf_text = contents.decode("utf-8", "replace").lower()
        if recomputed != digest or recomputed != tag:
            raise CatalogError(f"{name}: catalog says {tag.hex()}, file hashes to {recomputed.hex()}")
        if sips[0] != expected_sip:
            raise CatalogError(f"{name}: MEMBERINFO2 says {sips[0]}, its data type is {data_type}")
        if not os_attrs[0].startswith("2:"):
            raise CatalogError(f"{name}: OSAttr {os_attrs[0]!r}")
        found[name] = (data_type, recomputed.hex())
    if sorted(found) != sorted(expected_files):
        raise CatalogError(f"catalog lists {sorted(found)}, the package is {sorted(expected_files)}")
    attributes = {}
    for extension in ctl["extensions"] or []:
        if extension["extn_id"].dotted != OID_NAMEVALUE:
            raise CatalogError(f"catalog attribute {extension['extn_id'].dotted}")
        name, _, text = name_value(extension["extn_value"].native)
        attributes[name] = text
    if not attributes.get("OS"):
        raise CatalogError("no OS catalog attribute")
    hardware_ids = [value for name, value in attributes.items() if name.startswith("HWID")]
    if not hardware_ids:
        raise CatalogError("no HWID catalog attributes")
    for hardware_id in hardware_ids:
        if hardware_id != hardware_id.lower() or hardware_id not in inf_text:
            raise CatalogError(f"HWID {hardware_id!r} is not a lower-case hardware ID of the INF")
    if signed:
        if len(signed_data["signer_infos"]) != 1 or not signed_data["certificates"]:
            raise CatalogError("the catalog is not signed")
    for name, (data_type, digest) in sorted(found.items()):
        kind = "PE image hash" if data_type == OID_PE_IMAGE_DATA else "flat hash"
        print(f"check_catalog: {name}: {kind} sha256 {digest} matches")
    print(f"check_catalog: OS={attributes['OS']}, {len(hardware_ids)} hardware IDs")


def main(arguments):
    signed = "--signed" in arguments
    arguments = [argument for argument in arguments if argument != "--signed"]
    if len(arguments) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(arguments[0], arguments[1], arguments[2:], signed)
    except (CatalogError, ValueError, KeyError, OSError, struct.error) as error:
        print(f"check_catalog: {arguments[0]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
