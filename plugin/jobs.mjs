// Jobs in progress that a `pier` channel message may answer, by job id.
export const openJobs = new Map()
