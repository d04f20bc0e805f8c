// A tiny linter: no tabs, no trailing spaces, a final newline in every source file.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const problems = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (path.endsWith(".js") || path.endsWith(".mjs")) check(path);
  }
}
function check(path) {
  const text = readFileSync(path, "utf8");
  text.split("\n").forEach((line, i) => {
    if (line.includes("\t")) problems.push(`${path}:${i + 1}: tab`);
    if (/ +$/.test(line)) problems.push(`${path}:${i + 1}: trailing space`);
  });
  if (!text.endsWith("\n")) problems.push(`${path}: no final newline`);
}
["src", "test", "scripts"].forEach(walk);
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("lint ok");
