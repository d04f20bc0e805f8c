// The string a canary edit task changes.
export const GREETING = "Hello";

// The function a canary edit task updates.
export function greet(name: string): string {
  return `${GREETING}, ${name}!`;
}
