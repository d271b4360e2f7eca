/**
 * The subset of onnx.proto (IR version 8 era) that our graph builder emits,
 * declared by hand for protobufjs. Field numbers follow the ONNX specification;
 * everything we never emit (sparse tensors, training info, functions) is left out.
 */
import protobuf from 'protobufjs';

const ONNX_SUBSET = `
syntax = "proto3";
package onnx;

message StringStringEntryProto { string key = 1; string value = 2; }

message OperatorSetIdProto { string domain = 1; int64 version = 2; }

message TensorShapeProto {
  message Dimension {
    oneof value { int64 dim_value = 1; string dim_param = 2; }
  }
  repeated Dimension dim = 1;
}

message TypeProto {
  message Tensor { int32 elem_type = 1; TensorShapeProto shape = 2; }
  oneof value { Tensor tensor_type = 1; }
}

message ValueInfoProto { string name = 1; TypeProto type = 2; string doc_string = 3; }

message TensorProto {
  repeated int64 dims = 1;
  int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  repeated int32 int32_data = 5 [packed = true];
  repeated int64 int64_data = 7 [packed = true];
  string name = 8;
  bytes raw_data = 9;
  repeated double double_data = 10 [packed = true];
  string doc_string = 12;
  repeated StringStringEntryProto external_data = 13;
  int32 data_location = 14;
}

message AttributeProto {
  string name = 1;
  float f = 2;
  int64 i = 3;
  bytes s = 4;
  TensorProto t = 5;
  repeated float floats = 7;
  repeated int64 ints = 8;
  repeated bytes strings = 9;
  int32 type = 20;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  string name = 3;
  string op_type = 4;
  repeated AttributeProto attribute = 5;
  string doc_string = 6;
  string domain = 7;
}

message GraphProto {
  repeated NodeProto node = 1;
  string name = 2;
  repeated TensorProto initializer = 5;
  string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}

message ModelProto {
  int64 ir_version = 1;
  string producer_name = 2;
  string producer_version = 3;
  string domain = 4;
  int64 model_version = 5;
  string doc_string = 6;
  GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}
`;

const root = protobuf.parse(ONNX_SUBSET, { keepCase: true }).root;

export const ModelProto = root.lookupType('onnx.ModelProto');

/** onnx.TensorProto.DataType values. */
export const OnnxDataType = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
  bfloat16: 16,
  /** Packed 4-bit integers, as MatMulNBits-adjacent ops use. */
  uint4: 21,
  int4: 22,
} as const;

export type DType = keyof typeof OnnxDataType;

/** onnx.AttributeProto.AttributeType values. */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;
