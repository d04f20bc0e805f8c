import { test } from "node:test";
import assert from "node:assert/strict";
import { GREETING, greet } from "../src/greeting.js";

test("greet uses the greeting", () => {
  assert.equal(greet("canary"), `${GREETING}, canary!`);
});

test("greeting is a non-empty word", () => {
  assert.match(GREETING, /^\w+$/);
});
