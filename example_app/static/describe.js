// How the example words a finished job, shared by the job page and the job list.

export function describeOutcome(kind, status) {
  if (status.state === "SUCCESS") {
    const result = status.result;
    if (kind === "crunch") {
      const sum = result.sum_of_squares.toLocaleString("en");
      return `The squares of 1 to ${result.steps} add up to ${sum}.`;
    }
    if (kind === "import") return `Imported ${result} contacts.`;
    return typeof result === "string" ? result : JSON.stringify(result);
  }
  if (status.state === "REVOKED") return "Cancelled before it finished.";
  if (status.error) return status.error.message || status.error.type;
  if (status.progress && typeof status.progress.percent === "number") {
    return `${Math.round(status.progress.percent)} %`;
  }
  return "";
}
