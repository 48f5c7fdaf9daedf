"""A Python agent's view of the broker: stubs generated from proto/ with
grpcio-tools at run time, then every kind of call. Usage: python_client.py HOST:PORT"""

import hashlib
import os
import subprocess
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def generate_stubs(out_dir):
    root = os.path.join(os.path.dirname(__file__), "..", "..", "proto")
    protos = [os.path.join(root, "broker", "v1", name) for name in ("object_store.proto", "database.proto")]
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"-I{include}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos],
        check=True,
    )
    sys.path.insert(0, out_dir)


def main(addr):
    out = tempfile.mkdtemp()
    generate_stubs(out)
    from broker.v1 import database_pb2, database_pb2_grpc, object_store_pb2, object_store_pb2_grpc
    from google.protobuf import struct_pb2

    channel = grpc.insecure_channel(addr)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "broker.v1.ObjectStore", "broker.v1.Database"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)

    store = object_store_pb2_grpc.ObjectStoreStub(channel)
    body = os.urandom(3 * 1024 * 1024 + 17)

    def upload():
        yield object_store_pb2.PutObjectRequest(
            header=object_store_pb2.PutObjectHeader(key="py/blob.bin", content_type="application/pdf"))
        for i in range(0, len(body), 1024 * 1024):
            yield object_store_pb2.PutObjectRequest(chunk=body[i:i + 1024 * 1024])

    put = store.PutObject(upload(), timeout=30)
    assert put.size == len(body), put
    parts = list(store.GetObject(object_store_pb2.GetObjectRequest(key="py/blob.bin"), timeout=30))
    assert parts[0].WhichOneof("part") == "info" and parts[0].info.size == len(body)
    got = b"".join(p.chunk for p in parts[1:])
    assert [len(p.chunk) for p in parts[1:]] == [1024 * 1024] * 3 + [17], "chunks of 1 MiB"
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    try:
        store.HeadObject(object_store_pb2.HeadObjectRequest(key="py/missing"), timeout=5)
        raise AssertionError("HeadObject of a missing key succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e

    db = database_pb2_grpc.DatabaseStub(channel)
    tables = db.InitSchema(database_pb2.InitSchemaRequest(), timeout=10).tables
    assert list(tables) == ["documents", "processing_logs"], tables
    result = db.Query(database_pb2.QueryRequest(
        sql="SELECT $1::int8 + 1 AS n, $2::text IS NULL AS missing, now() AS at",
        params=[database_pb2.Value(int_value=41), database_pb2.Value(null_value=struct_pb2.NULL_VALUE)]),
        timeout=5)
    assert [c.name for c in result.columns] == ["n", "missing", "at"]
    row = result.rows[0].values
    assert row[0].int_value == 42 and row[1].bool_value is True and row[2].HasField("timestamp_value")
    try:
        db.Query(database_pb2.QueryRequest(sql="DELETE FROM documents"), timeout=5)
        raise AssertionError("a write through Query succeeded")
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT), e
    print("python interop: ok")


if __name__ == "__main__":
    main(sys.argv[1])
