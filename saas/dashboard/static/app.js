console.log('dashboard')
