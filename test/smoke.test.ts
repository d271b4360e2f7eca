import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DimooError } from '../src/errors.js';

test('DimooError carries its code', () => {
  const e = new DimooError('bad', 'E_PARAM');
  assert.equal(e.code, 'E_PARAM');
  assert.ok(e instanceof Error);
});
